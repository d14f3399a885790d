//! The tar extractor: one entry at a time, every path walked from the root
//! descriptor with `O_NOFOLLOW`, hard links only to what this archive made,
//! directory metadata applied last.

use super::*;

pub(super) fn extract_into<R: Read>(
    reader: R,
    tmp: &Path,
    opts: &UnpackOptions,
    tripped: &Rc<Cell<bool>>,
) -> Result<UnpackStats> {
    let root = open_fd(
        None,
        tmp.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(tmp.display().to_string(), e.into()))?;
    let mut ex = Extractor {
        root,
        opts,
        chown: opts.uid_shift.is_some() || unistd::geteuid().is_root(),
        stats: UnpackStats::default(),
        entries: 0,
        created: HashMap::new(),
        dirs: HashMap::new(),
        root_meta: None,
    };
    let stream_err = |e: io::Error| {
        if tripped.get() {
            UnpackError::TooLarge {
                limit: opts.max_bytes,
            }
        } else {
            corrupt(e)
        }
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(stream_err)? {
        let mut entry = entry.map_err(stream_err)?;
        ex.extract(&mut entry, &stream_err)?;
    }
    ex.finish()?;
    Ok(ex.stats)
}

/// What a non-directory path in the tree came from; hardlinks may only point
/// at these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Created {
    File,
    Symlink,
}

/// Directory metadata applied after all entries, because creating children
/// bumps a directory's mtime and a read-only mode would block them.
#[derive(Debug, Clone)]
struct DirMeta {
    comps: Vec<OsString>,
    mode: u32,
    mtime: Option<i64>,
}

/// Entry metadata after id mapping.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Option<i64>,
}

struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a UnpackOptions,
    chown: bool,
    stats: UnpackStats,
    /// Entries seen and directories implied, against `max_entries`.
    entries: u64,
    created: HashMap<Vec<u8>, Created>,
    dirs: HashMap<Vec<u8>, DirMeta>,
    root_meta: Option<Meta>,
}

impl Extractor<'_> {
    fn extract<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream_err: &dyn Fn(io::Error) -> UnpackError,
    ) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global pax headers only carry defaults (comments, charset) that
            // do not affect what we create.
            return Ok(());
        }
        self.count_entry()?;
        let raw = entry.path_bytes().into_owned();
        let comps = normalize(&raw)?;
        let name = display(&comps);

        // Old V7 archives mark directories only with a trailing slash.
        let is_dir =
            kind == EntryType::Directory || (kind == EntryType::Regular && raw.ends_with(b"/"));
        match kind {
            EntryType::Char | EntryType::Block => {
                return Err(UnpackError::DeviceNode { entry: name });
            }
            EntryType::Fifo => return Err(UnpackError::Fifo { entry: name }),
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link => {}
            other => {
                return Err(UnpackError::UnsupportedEntry {
                    entry: name,
                    kind: format!("{other:?}"),
                });
            }
        }

        let meta = self.meta(entry, &name)?;
        if comps.is_empty() {
            if !is_dir {
                return Err(UnpackError::BadName {
                    entry: printable_bytes(&raw),
                    reason: "the archive root must be a directory",
                });
            }
            self.root_meta = Some(meta);
            return Ok(());
        }

        if is_dir {
            self.dir(&comps, &name, meta)
        } else {
            match kind {
                EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned());
                    self.symlink(&comps, &name, target, meta)
                }
                EntryType::Link => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned());
                    self.hardlink(&comps, &name, target)
                }
                _ => self.file(entry, &comps, &name, meta, stream_err),
            }
        }
    }

    fn count_entry(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > self.opts.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.opts.max_entries,
            });
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta> {
        let header_err = |e: io::Error| {
            UnpackError::Corrupt(format!("entry {name}: {}", printable_ascii(&e.to_string())))
        };
        let (mut uid, mut gid) = (
            entry.header().uid().map_err(header_err)?,
            entry.header().gid().map_err(header_err)?,
        );
        let mode = entry.header().mode().map_err(header_err)? & 0o7777;
        let mtime = entry.header().mtime().ok().map(|m| m as i64);
        // Pax records override the header for ids too large for it.
        if let Some(pax) = entry.pax_extensions().map_err(header_err)? {
            for ext in pax.flatten() {
                let parse = || -> Option<u64> { ext.value().ok()?.trim().parse().ok() };
                match ext.key() {
                    Ok("uid") => uid = parse().unwrap_or(uid),
                    Ok("gid") => gid = parse().unwrap_or(gid),
                    _ => {}
                }
            }
        }
        Ok(Meta {
            uid: self.map_id(uid, name)?,
            gid: self.map_id(gid, name)?,
            mode,
            mtime,
        })
    }

    fn map_id(&self, id: u64, name: &str) -> Result<u32> {
        match self.opts.uid_shift {
            Some(shift) => {
                if id >= u64::from(self.opts.shift_range) {
                    return Err(UnpackError::IdOutOfRange {
                        entry: name.to_string(),
                        id,
                        range: self.opts.shift_range,
                    });
                }
                u32::try_from(id)
                    .ok()
                    .and_then(|id| id.checked_add(shift))
                    .ok_or_else(|| UnpackError::IdOverflow {
                        entry: name.to_string(),
                        id,
                        shift,
                    })
            }
            None => u32::try_from(id).map_err(|_| UnpackError::IdOverflow {
                entry: name.to_string(),
                id,
                shift: 0,
            }),
        }
    }

    /// Owner for directories the archive implies: root of the (shifted) range.
    fn implicit_owner(&self) -> u32 {
        self.opts.uid_shift.unwrap_or(0)
    }

    /// Opens the directory holding `comps`' last component, creating missing
    /// parents and refusing to pass through anything that is not a real
    /// directory.
    fn open_parent(&mut self, comps: &[OsString], name: &str, create: bool) -> Result<OwnedFd> {
        let mut cur = self.root.try_clone().map_err(|e| io_err(name, e))?;
        let parents = &comps[..comps.len().saturating_sub(1)];
        for (i, comp) in parents.iter().enumerate() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let next = match open_fd(Some(&cur), comp, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    self.count_entry()?;
                    stat::mkdirat(
                        Some(cur.as_raw_fd()),
                        comp.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(|e| io_err(name, e.into()))?;
                    self.stats.dirs += 1;
                    let fd = open_fd(Some(&cur), comp, flags, Mode::empty())
                        .map_err(|e| io_err(name, e.into()))?;
                    let owner = self.implicit_owner();
                    if self.chown {
                        fchown(&fd, owner, owner, name)?;
                    }
                    // Explicit chmod so the process umask does not leak in.
                    stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(IMPLICIT_DIR_MODE))
                        .map_err(|e| io_err(name, e.into()))?;
                    fd
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    let prefix = display(&comps[..=i]);
                    return Err(match lstat_at(&cur, comp) {
                        Ok(Some(st)) if is_type(&st, SFlag::S_IFLNK) => {
                            UnpackError::WriteThroughSymlink {
                                entry: name.to_string(),
                                link: prefix,
                            }
                        }
                        _ => UnpackError::NotADirectory {
                            entry: name.to_string(),
                            parent: prefix,
                        },
                    });
                }
                Err(e) => return Err(io_err(name, e.into())),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Makes room for a new entry named `last` in `dir`. Returns true when a
    /// directory is already there and `keep_dir` asked to keep it.
    fn clear_slot(
        &mut self,
        dir: &OwnedFd,
        comps: &[OsString],
        name: &str,
        keep_dir: bool,
    ) -> Result<bool> {
        let last = last(comps);
        let Some(st) = lstat_at(dir, last).map_err(|e| io_err(name, e.into()))? else {
            return Ok(false);
        };
        let key = key(comps);
        if is_type(&st, SFlag::S_IFDIR) {
            if keep_dir {
                return Ok(true);
            }
            // Later entries replace earlier ones, as with GNU tar, but only an
            // empty directory can go.
            unistd::unlinkat(Some(dir.as_raw_fd()), last, UnlinkatFlags::RemoveDir).map_err(
                |e| match e {
                    Errno::ENOTEMPTY | Errno::EEXIST => UnpackError::Conflict {
                        entry: name.to_string(),
                    },
                    e => io_err(name, e.into()),
                },
            )?;
            self.dirs.remove(&key);
        } else {
            unistd::unlinkat(Some(dir.as_raw_fd()), last, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err(name, e.into()))?;
            self.created.remove(&key);
        }
        Ok(false)
    }

    fn dir(&mut self, comps: &[OsString], name: &str, meta: Meta) -> Result<()> {
        let parent = self.open_parent(comps, name, true)?;
        let last = last(comps);
        if !self.clear_slot(&parent, comps, name, true)? {
            stat::mkdirat(
                Some(parent.as_raw_fd()),
                last,
                Mode::from_bits_truncate(0o700),
            )
            .map_err(|e| io_err(name, e.into()))?;
            self.stats.dirs += 1;
        }
        let fd = open_fd(
            Some(&parent),
            last,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(name, e.into()))?;
        if self.chown {
            fchown(&fd, meta.uid, meta.gid, name)?;
        }
        self.dirs.insert(
            key(comps),
            DirMeta {
                comps: comps.to_vec(),
                mode: meta.mode,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        comps: &[OsString],
        name: &str,
        meta: Meta,
        stream_err: &dyn Fn(io::Error) -> UnpackError,
    ) -> Result<()> {
        // The stream cap alone misses GNU sparse entries, whose holes expand
        // to zeros without taking space in the archive; so cap what is
        // written too, checking the declared size up front to fail early.
        let limit = self.opts.max_bytes;
        if self.stats.bytes.saturating_add(entry.size()) > limit {
            return Err(UnpackError::TooLarge { limit });
        }
        let parent = self.open_parent(comps, name, true)?;
        self.clear_slot(&parent, comps, name, false)?;
        // O_EXCL never follows a symlink at the final component, and the slot
        // was just cleared, so this always creates a fresh inode.
        let fd = open_fd(
            Some(&parent),
            last(comps),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err(name, e.into()))?;
        self.created.insert(key(comps), Created::File);
        let mut out = File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        // Runs of zeros (the holes of a sparse entry, or zeros in a plain
        // one) are skipped, not written: they stay holes on disk, and every
        // later copy keeps them holes.
        let mut len = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_err(e)),
            };
            self.stats.bytes += n as u64;
            if self.stats.bytes > limit {
                return Err(UnpackError::TooLarge { limit });
            }
            len += n as u64;
            if buf[..n].iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(n as i64))
                    .map_err(|e| io_err(name, e))?;
            } else {
                out.write_all(&buf[..n]).map_err(|e| io_err(name, e))?;
            }
        }
        out.set_len(len).map_err(|e| io_err(name, e))?;
        let fd = OwnedFd::from(out);
        // chown before chmod: chown clears setuid/setgid bits.
        if self.chown {
            fchown(&fd, meta.uid, meta.gid, name)?;
        }
        stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
            .map_err(|e| io_err(name, e.into()))?;
        if let Some(mtime) = meta.mtime {
            stat::futimens(
                fd.as_raw_fd(),
                &TimeSpec::UTIME_OMIT,
                &TimeSpec::new(mtime, 0),
            )
            .map_err(|e| io_err(name, e.into()))?;
        }
        self.stats.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        comps: &[OsString],
        name: &str,
        target: Option<Vec<u8>>,
        meta: Meta,
    ) -> Result<()> {
        let target = match target {
            Some(t) if !t.is_empty() => t,
            _ => return Err(bad_name(name, "symlink without a target")),
        };
        if target.contains(&0) {
            return Err(bad_name(name, "symlink target contains a nul byte"));
        }
        if target.len() > MAX_PATH_LEN {
            return Err(bad_name(name, "symlink target too long"));
        }
        let parent = self.open_parent(comps, name, true)?;
        self.clear_slot(&parent, comps, name, false)?;
        let last = last(comps);
        unistd::symlinkat(OsStr::from_bytes(&target), Some(parent.as_raw_fd()), last)
            .map_err(|e| io_err(name, e.into()))?;
        self.created.insert(key(comps), Created::Symlink);
        if self.chown {
            unistd::fchownat(
                Some(parent.as_raw_fd()),
                last,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(name, e.into()))?;
        }
        if let Some(mtime) = meta.mtime {
            stat::utimensat(
                Some(parent.as_raw_fd()),
                last,
                &TimeSpec::UTIME_OMIT,
                &TimeSpec::new(mtime, 0),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| io_err(name, e.into()))?;
        }
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(&mut self, comps: &[OsString], name: &str, target: Option<Vec<u8>>) -> Result<()> {
        let raw = target.ok_or_else(|| bad_name(name, "hardlink without a target"))?;
        let target_name = printable_bytes(&raw);
        let tcomps = normalize(&raw).map_err(|e| match e {
            UnpackError::PathTraversal { .. } => UnpackError::HardlinkOutside {
                entry: name.to_string(),
                target: target_name.clone(),
            },
            e => e,
        })?;
        // Only what this archive created counts: anything else (host files,
        // directories) must not become reachable through a new name.
        if tcomps.is_empty() || !self.created.contains_key(&key(&tcomps)) {
            return Err(UnpackError::HardlinkOutside {
                entry: name.to_string(),
                target: target_name,
            });
        }
        if tcomps == comps {
            return Err(bad_name(name, "hardlink to itself"));
        }
        let tparent = self.open_parent(&tcomps, name, false)?;
        let parent = self.open_parent(comps, name, true)?;
        self.clear_slot(&parent, comps, name, false)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        unistd::linkat(
            Some(tparent.as_raw_fd()),
            last(&tcomps),
            Some(parent.as_raw_fd()),
            last(comps),
            AtFlags::empty(),
        )
        .map_err(|e| io_err(name, e.into()))?;
        let kind = self
            .created
            .get(&key(&tcomps))
            .copied()
            .unwrap_or(Created::File);
        self.created.insert(key(comps), kind);
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut dirs: Vec<DirMeta> = self.dirs.values().cloned().collect();
        // Deepest first, so a parent made read-only later never blocks its
        // children.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.comps.len()));
        for d in dirs {
            let name = display(&d.comps);
            let parent = self.open_parent(&d.comps, &name, false)?;
            let fd = open_fd(
                Some(&parent),
                last(&d.comps),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(&name, e.into()))?;
            set_dir_meta(&fd, d.mode, d.mtime, &name)?;
        }
        let root = self.root.try_clone().map_err(|e| io_err(".", e))?;
        match self.root_meta {
            Some(meta) => {
                if self.chown {
                    fchown(&root, meta.uid, meta.gid, ".")?;
                }
                set_dir_meta(&root, meta.mode, meta.mtime, ".")?;
            }
            None => {
                let owner = self.implicit_owner();
                if self.chown {
                    fchown(&root, owner, owner, ".")?;
                }
                set_dir_meta(&root, IMPLICIT_DIR_MODE, None, ".")?;
            }
        }
        Ok(())
    }
}
