-- The store's schema as corral created it before it kept migrations. IF NOT
-- EXISTS lets a store made then take this migration without change.
CREATE TABLE IF NOT EXISTS images (
    fingerprint TEXT PRIMARY KEY,
    alias TEXT UNIQUE,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS instances (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    spec TEXT NOT NULL,
    idmap_slot INTEGER UNIQUE,
    phase TEXT NOT NULL,
    desired TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
