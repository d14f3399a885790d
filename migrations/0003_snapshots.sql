-- Snapshots of instance roots: the writable state copied under
-- <instance>/snapshots/<name>, over the image it was taken on.
CREATE TABLE snapshots (
    instance TEXT NOT NULL,
    name TEXT NOT NULL,
    image TEXT NOT NULL,
    storage TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (instance, name)
);
