"""flood.py: one client's pipelining flood, for the hostile-client tests
(test_hostile_http.py on one node, test_cluster.py on a leader).

A flood is many connections, each sent 64 KiB of one small pipelined
request at once and never read from (the receive buffer is shrunk so the
node's answers back up). Standard library only."""

import resource
import socket

FLOOD_BYTES = 64 * 1024


def allow_descriptors(case, conns):
    """Raises this process's RLIMIT_NOFILE for conns sockets (restored at the
    test's cleanup), or skips the test when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = conns + 500
    if hard != resource.RLIM_INFINITY and hard < need:
        case.skipTest("needs %d descriptors, the hard limit is %d" % (need, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    case.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))


def open_flood(host, port, conns, request):
    """Opens conns connections to host:port and sends each FLOOD_BYTES of
    request repeated, as much as the kernel takes at once. Returns the
    sockets (the caller closes them) and the bytes sent."""
    payload = request * (FLOOD_BYTES // len(request))
    socks, sent = [], 0
    try:
        for _ in range(conns):
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, port))
            s.setblocking(False)
        for s in socks:
            try:
                sent += s.send(payload)
            except BlockingIOError:
                pass
    except BaseException:
        close_flood(socks)
        raise
    return socks, sent


def close_flood(socks):
    for s in socks:
        s.close()
