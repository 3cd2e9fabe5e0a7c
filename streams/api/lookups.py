"""Finding a profile for the API: in this worker's partition databases, or at the worker
that owns the key, following merges.

Every worker answers every lookup. A key's partition of the identity or profile table
belongs to one worker; a lookup that lands elsewhere is passed once to the owner, marked
as forwarded, and the owner answers it itself.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from faust.types import TP

from streams.identity.resolver import Owner
from streams.partitioning import key_partition
from streams.privacy.requests import RequestStatus
from streams.profiles.model import Erased, Profile, load_stored
from streams.runtime.context import RawTable, Runtime
from streams.runtime.pending import partition_reader

# Merges chain (anonymous -> email -> user id profile); longer chains mean a merge in flight.
MAX_FORWARDS = 8
# Marks a lookup one worker passed on to the key's owner. The owner answers it itself: while
# ownership moves, two workers could otherwise pass a lookup back and forth without end.
FORWARDED_HEADER = "X-Cdp-Forwarded"
FORWARD_TIMEOUT_S = 3.0


class NotReadyError(Exception):
    """The worker does not (yet) know who owns the key; answered with 503."""


class Lookups:
    def __init__(self, runtime: Runtime, token: str | None) -> None:
        self._app = runtime.app
        self._identities = runtime.identities
        self._profiles = runtime.profiles
        self._partitions = runtime.settings.partitions
        # Straight from the key's partition database: Faust's ``get`` asks every database of
        # the table in turn for a key it has not seen, a large part of a decision's time.
        self._read_profile = partition_reader(runtime.profiles)
        self._read_identity = partition_reader(runtime.identities)
        self._privacy = runtime.privacy
        self._read_privacy = partition_reader(runtime.privacy)
        # Hops to the worker owning a key carry the token like any other caller.
        self._hop_headers = {FORWARDED_HEADER: "1"}
        if token:
            self._hop_headers["Authorization"] = f"Bearer {token}"
        self._hop_timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)

    def locate(self, table: RawTable, key: bytes, forwarded: bool) -> int | str:
        """The partition of ``key`` in ``table`` when this worker owns it, else the base URL
        of the worker that does."""
        app = self._app
        partition = key_partition(key, self._partitions)
        # Owned here, the common case, without Faust's router: it hashes the key again with
        # aiokafka's slower murmur2 and builds a URL object to compare.
        if app.assignor.is_active(TP(table.changelog_topic.get_topic_name(), partition)):
            return partition
        try:
            url = app.router.key_store(table.name, key)
        except KeyError as exc:
            raise NotReadyError("partition ownership is not known yet; retry shortly") from exc
        own = app.conf.canonical_url
        if (url.host, url.port) == (own.host, own.port):
            return partition
        if forwarded:
            raise NotReadyError("the key's partition is moving between workers; retry shortly")
        return str(url).rstrip("/")

    async def fetch_remote(self, url: str) -> tuple[int, Any]:
        """(status, body) of ``url`` on the worker owning a key; 200 and 404 are answers."""
        try:
            async with self._app.http_client.get(
                url, headers=self._hop_headers, timeout=self._hop_timeout
            ) as response:
                status, body = response.status, await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise NotReadyError("the key's owner did not answer; retry shortly") from exc
        if status not in (200, 404):
            raise NotReadyError(f"the worker owning the key answered {status}; retry shortly")
        return status, body

    async def profile_by_id(self, profile_id: str, forwarded: bool) -> Profile | None:
        """The profile from its owner, local or remote; None when there is none.

        A profile merged into another answers with the one it was merged into. A forwarded
        lookup is answered here for the profile it names, and may be passed on once more
        for the profile that one was merged into.
        """
        for hop in range(MAX_FORWARDS):
            key = profile_id.encode()
            owner = self.locate(self._profiles, key, forwarded and hop == 0)
            if isinstance(owner, str):
                status, body = await self.fetch_remote(f"{owner}/profiles/{profile_id}")
                return Profile.from_dict(body) if status == 200 else None
            stored = self._read_profile(key, owner)
            if stored is None:
                return None
            found = load_stored(stored)
            if isinstance(found, Profile):
                return found
            if isinstance(found, Erased):
                return None
            profile_id = found.into
        raise NotReadyError("the profile is being merged; retry shortly")

    async def profile_id_for(self, key: str, forwarded: bool) -> str | None:
        """The id of the profile an identifier (an identity-table key) belongs to."""
        encoded = key.encode()
        owner = self.locate(self._identities, encoded, forwarded)
        if isinstance(owner, str):
            status, body = await self.fetch_remote(f"{owner}/identities/{key}")
            return str(body["profile_id"]) if status == 200 else None
        stored = self._read_identity(encoded, owner)
        return Owner.decode(stored).profile_id if stored is not None else None

    async def request_status(self, request_id: str, forwarded: bool) -> dict[str, Any] | None:
        """A privacy request's status (``RequestStatus.public``) from the worker holding it."""
        encoded = request_id.encode()
        owner = self.locate(self._privacy, encoded, forwarded)
        if isinstance(owner, str):
            status, body = await self.fetch_remote(f"{owner}/privacy/requests/{request_id}")
            return dict(body) if status == 200 else None
        stored = self._read_privacy(encoded, owner)
        return RequestStatus.decode(stored).public() if stored is not None else None

    async def profile_for(self, key: str, forwarded: bool) -> Profile | None:
        profile_id = await self.profile_id_for(key, forwarded)
        if profile_id is None:
            return None
        return await self.profile_by_id(profile_id, forwarded)
