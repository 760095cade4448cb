"""Paired API clients (`clients.credentials`, SPEC §15.7): `_txn` helpers over one table.

The table owns one record per paired client (a browser): its id, the sha-256 of its secret,
a name and when it was paired. The API keeps a copy in memory and writes through these.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol.errors import LocalProtocolError

from .api import ClientRecord
from .keys import Table
from .kv import KvTxn
from .records import decode_client, encode_client

__all__ = ["CLIENT_ID_BYTES", "add_client_txn", "clients_txn"]

CLIENT_ID_BYTES: Final = 16
_AFTER_EVERY_ID: Final = b"\xff" * (CLIENT_ID_BYTES + 1)


def clients_txn(txn: KvTxn) -> list[ClientRecord]:
    """Every paired client, by client id."""
    return [decode_client(k, v) for k, v in txn.scan(Table.CLIENTS, b"", _AFTER_EVERY_ID)]


def add_client_txn(txn: KvTxn, record: ClientRecord, max_clients: int) -> bool:
    """Store `record` unless `max_clients` are paired already (counted in the same txn).

    Raises:
        LocalProtocolError: the id is not 16 bytes or is taken.
    """
    if len(record.client_id) != CLIENT_ID_BYTES:
        raise LocalProtocolError(f"a client id is {CLIENT_ID_BYTES} bytes")
    if len(clients_txn(txn)) >= max_clients:
        return False
    if not txn.insert(Table.CLIENTS, record.client_id, encode_client(record)):
        raise LocalProtocolError(f"client {record.client_id.hex()} is already paired")
    return True
