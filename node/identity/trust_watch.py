"""The warning when a verified user's device keys change (SPEC §29.5): `DeviceKeysChanged`.

`HomeRecords` hands each newly adopted home record here; if its user has verified device keys
and the record lists a key that is not verified, or drops a verified one, the app and the
clients hear of it once per such record. Owns no state (the trust is the store's).
"""

from __future__ import annotations

from collections.abc import Callable

from hearthmesh.node.events import DeviceKeysChanged, NodeEvent
from hearthmesh.protocol.home_record import HomeRecord
from hearthmesh.protocol.verification import keys_changed
from hearthmesh.storage.api import Trust
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["TrustWatch"]


class TrustWatch:
    """Checks adopted records against what our user verified."""

    def __init__(self, *, store: AsyncStore, emit: Callable[[NodeEvent], None]) -> None:
        self._store = store
        self._emit = emit

    async def adopted(self, record: HomeRecord) -> None:
        """A newer record of `record.user` was adopted: warn if their keys changed."""
        trusted = await self._store.read(self._store.store.trusted_devices, record.user)
        verified = {device for device, trust in trusted.items() if trust is Trust.VERIFIED}
        listed = [certificate.device for certificate in record.devices]
        if keys_changed(verified, listed):
            self._emit(DeviceKeysChanged(user=record.user, devices=tuple(listed)))
