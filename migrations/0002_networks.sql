-- Standalone networks: a Linux bridge with a gateway address, a dnsmasq for
-- DHCP and DNS, and NAT to the host, re-created from these rows at start-up.
CREATE TABLE networks (
    name TEXT PRIMARY KEY,
    subnet TEXT NOT NULL,
    nat INTEGER NOT NULL,
    mtu INTEGER,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
