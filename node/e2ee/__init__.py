"""End-to-end encryption state of this device (SPEC §27): the pickle key and `DeviceCrypto`."""
