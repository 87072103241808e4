#!/usr/bin/python3
"""HTTP/1.1 pipelining over https against `duplex serve --tls-cert ...
--root DIR` (DIR has big.bin, 16 MiB, and style.css). Run by
tests/scripts/tls_serve.sh with Debian's /usr/bin/python3:

    /usr/bin/python3 https_pipeline.py PORT CA_FILE

One TLS connection asks for big.bin, then, without reading, sends 6
batches of 125 pipelined requests for /style.css (5000 bytes each, 0.1 s
apart) while the server is still writing big.bin; then it reads. Every
request must be answered, in order: 1 + 750 responses. (A server that
stops reading while it responds must keep, not drop, what it already read;
and with TLS, must come back to the plaintext still inside the TLS
buffers when it resumes, without waiting for more bytes from the socket.)
Prints "ok"/"not ok"; exits 1 on failure. Bounded: 15 s.
"""
import socket
import ssl
import sys
import time

port, ca = int(sys.argv[1]), sys.argv[2]
BATCHES, PER = 6, 125


def main():
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A fixed, small receive window: the 16 MiB body cannot all be in
    # flight, so the server is still responding when the batches arrive.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.settimeout(5)
    raw.connect(("127.0.0.1", port))
    s = ssl.create_default_context(cafile=ca).wrap_socket(
        raw, server_hostname="localhost")
    req = lambda p: f"GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    s.sendall(req("/big.bin"))
    time.sleep(0.2)
    small = req("/style.css")
    for _ in range(BATCHES):
        s.sendall(small * PER)
        time.sleep(0.1)
    want = 1 + BATCHES * PER
    data = bytearray()
    deadline = time.monotonic() + 10
    how = "all answered"
    marker = b"HTTP/1.1 200 OK\r\n"
    got = 0
    while got < want:
        left = deadline - time.monotonic()
        if left <= 0:
            how = "timed out (10 s)"
            break
        s.settimeout(left)
        try:
            d = s.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            how = "timed out (10 s)"
            break
        except (ConnectionResetError, ssl.SSLError) as e:
            how = f"connection error {e!r}"
            break
        if not d:
            how = "closed by the server"
            break
        # Count across chunk boundaries: keep a short tail.
        data += d
        got += data.count(marker)
        cut = max(0, len(data) - len(marker) + 1)
        del data[:cut]
    s.close()
    ok = got == want
    print(f"{'ok' if ok else 'not ok'} - https pipelining: {got} of {want} "
          f"pipelined requests answered during a 16 MiB response ({how})")
    return 0 if ok else 1


sys.exit(main())
