"""Interest memory: the durable event log, sessions, and the rule by which long-term interests drift."""

from driftrec.memory.drift import DriftPolicy, ProfileProposal, ProposedInterest, apply_proposal, decay
from driftrec.memory.events import EventStore, event_id
from driftrec.memory.keys import ApiKey, KeyStore, UnknownKey
from driftrec.memory.sessions import open_session, sessionize

__all__ = [
    "ApiKey",
    "DriftPolicy",
    "EventStore",
    "KeyStore",
    "ProfileProposal",
    "ProposedInterest",
    "UnknownKey",
    "apply_proposal",
    "decay",
    "event_id",
    "open_session",
    "sessionize",
]
