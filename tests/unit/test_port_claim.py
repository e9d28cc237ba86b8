"""Several API processes on one port: the supervisor holds the port with a socket that never listens, and
each worker process it is sent to gets a socket of its own on the same address (Linux SO_REUSEPORT), so the
kernel spreads new connections over the workers instead of the first one awake taking them all."""

from __future__ import annotations

import pickle
import socket
from multiprocessing.reduction import ForkingPickler

import pytest

from driftrec.server.processes import PortClaim, balanced_sockets_supported

pytestmark = pytest.mark.skipif(not balanced_sockets_supported(), reason="SO_REUSEPORT balances on Linux only")


def test_a_claim_sent_to_a_worker_arrives_as_its_own_socket_on_the_same_address() -> None:
    claim = PortClaim.on("127.0.0.1", 0)
    own = [pickle.loads(ForkingPickler.dumps(claim)) for _ in range(2)]  # as the supervisor sends it to two workers
    try:
        assert all(type(s) is socket.socket and s.getsockname() == claim.getsockname() for s in own)
        assert len({s.fileno() for s in own} | {claim.fileno()}) == 3  # three sockets, one address
        for s in own:
            s.listen(64)
        accepted = [0, 0]
        for _ in range(40):  # the kernel hashes each new connection to one listening socket
            with socket.create_connection(claim.getsockname(), timeout=2):
                pass
        for n, s in enumerate(own):
            s.settimeout(0.05)
            while True:
                try:
                    s.accept()[0].close()
                except TimeoutError:
                    break
                accepted[n] += 1
        assert sum(accepted) == 40  # none went to the claim, which never listens
        assert min(accepted) >= 5  # spread over both (a binomial split below 5 of 40: ~1e-7)
    finally:
        for s in [*own, claim]:
            s.close()


def test_a_port_in_use_fails_in_the_supervisor() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            PortClaim.on("127.0.0.1", taken.getsockname()[1])
