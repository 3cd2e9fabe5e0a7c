"""The access right: everything held about a person, as one JSON document.

Built from the profile, which holds all the worker keeps about the person: identifiers
(and those refused to it), the profiles merged into it, consent and its history,
behaviour, segments and journey state. What lives elsewhere, out of the worker's reach to
read back per person, is named under ``held_elsewhere``.
"""

from __future__ import annotations

from typing import Any

from streams.identity.identifiers import merged_into
from streams.journeys.definitions import Flows
from streams.journeys.flow import Book, summary
from streams.profiles.model import Profile

HELD_ELSEWHERE = {
    "output_topics": "segment changes, journey triggers and journey events name the profile id "
    "(triggers the email address), identity merges its identifiers; kept for each topic's "
    "retention.ms",
    "dead_letters": "events that failed validation keep their raw bytes in the dead-letter "
    "topic for CDP_DEAD_LETTER_RETENTION",
    "table_changelogs": "earlier versions of the profile until compaction "
    "(CDP_CHANGELOG_MAX_COMPACTION_LAG)",
}


def export_document(profile: Profile, flows: Flows, exported_at: int) -> dict[str, Any]:
    stored = profile.to_dict()
    return {
        "profile_id": profile.profile_id,
        "exported_at": exported_at,
        "identifiers": stored["identities"],
        "merged_profiles": merged_into(profile),
        "consent": stored["consent"],
        "consent_history": stored["consent_history"],
        "newsletter": stored["newsletter"],
        "segments": stored["segments"],
        "journeys": {
            **summary(Book.from_dict(profile.journey_flows), flows),
            "sent": stored["journeys"],
        },
        "profile": stored,
        "held_elsewhere": HELD_ELSEWHERE,
    }
