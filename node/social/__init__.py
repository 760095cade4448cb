"""Our user among others (SPEC §32): profiles, blocks, presence visibility, message requests."""
