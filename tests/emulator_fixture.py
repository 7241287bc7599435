"""pytest plugin: the Kimi emulator on a free loopback port (being built)."""
