"""Mutual-TLS forward from a TCP port to a unix socket: the Docker daemon over
DOCKER_HOST=tcp://...:2376 with DOCKER_TLS_VERIFY, as a remote daemon would serve it.

socat's OpenSSL listener cannot be used: it sets no session id context, so OpenSSL
refuses a client that resumes a session (rustls does, on its second connection) with
"session id context uninitialized". Python's ssl module sets one.
"""

import argparse
import socket
import ssl
import threading


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(conn: socket.socket, ctx: ssl.SSLContext, unix_path: str) -> None:
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        conn.close()  # no or a wrong client certificate: the client sees the alert
        return
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(unix_path)
        back = threading.Thread(target=pump, args=(upstream, tls), daemon=True)
        back.start()
        pump(tls, upstream)
        back.join()
    except OSError:
        pass
    finally:
        upstream.close()
        tls.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="host:port")
    ap.add_argument("--unix", required=True, help="the unix socket to forward to")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True, help="clients must present a certificate from it")
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED

    host, port = args.listen.rsplit(":", 1)
    listener = socket.create_server((host, int(port)), reuse_port=False)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, ctx, args.unix), daemon=True).start()


if __name__ == "__main__":
    main()
