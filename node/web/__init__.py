"""The browser client's files (SPEC §15.7), served by `node/api/web_client.py`; no Python."""
