"""The outbound rule (jobs.outbound): only public http(s) destinations unless allowed.

Image hosts are faked as loopback HTTP servers. A guard on ``socket.connect`` fails the
test if anything tries to reach a non-loopback address: refusals must come first.
"""

from __future__ import annotations

import http.server
import io
import socket
import struct
import threading
import time
import zlib

import pytest
from PIL import Image

from core.config import Config
from jobs.outbound import (
    FetchResult,
    ImageRefused,
    OutboundPolicy,
    OutboundRefused,
    fetch,
    is_public,
    load_image,
    post_json,
)


class _Leak(BaseException):
    """Raised by the connect guard; a BaseException so nothing on the way swallows it."""


@pytest.fixture(autouse=True)
def no_outside_traffic(monkeypatch):
    attempts = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not __import__("ipaddress").ip_address(
                host.split("%")[0]).is_loopback:
            attempts.append(address)
            raise _Leak(f"test tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert attempts == []


def png_bytes(size=(40, 30), colour=(200, 30, 30), mode="RGB", fmt="PNG", **save):
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, fmt, **save)
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict = {}
    hits: list = []

    def _dispatch(self):
        self.hits.append((self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            return self.reply(404, b"missing", "text/plain")
        route(self, body)

    do_GET = do_POST = _dispatch

    def reply(self, status, body=b"", ctype="application/octet-stream", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients hang up on purpose
        pass


@pytest.fixture(scope="module")
def host():
    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def routes(host):
    Handler.routes.clear()
    Handler.hits.clear()
    return Handler.routes


LOOPBACK = OutboundPolicy("127.0.0.1")


def test_fetch_from_allowed_loopback_host(host, routes):
    data = png_bytes()
    routes["/p.png"] = lambda h, _: h.reply(200, data, "image/png; charset=binary")
    result = fetch(f"http://{host}/p.png", policy=LOOPBACK, field="product_image_url")
    assert result == FetchResult(data, "image/png", f"http://{host}/p.png")
    assert load_image(result.content).size == (40, 30)


def test_policy_from_config():
    policy = OutboundPolicy.from_config(Config(outbound_allow_hosts=" 127.0.0.1 , 10.0.0.0/8"))
    assert policy.check_url("http://10.20.30.40/x") == "10.20.30.40"
    assert policy.check_url("https://127.0.0.1:8443/") == "127.0.0.1"
    with pytest.raises(OutboundRefused):
        policy.check_url("http://192.168.1.1/")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/p.png", "http://localhost:{port}/p.png", "http://10.0.0.1/",
    "http://192.168.1.1/", "http://172.16.5.4/", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/", "http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/",
    "http://[ff02::1]/", "http://[fe80::1]/", "http://[fd00::1]/", "http://100.64.0.1/",
    "http://[::ffff:10.0.0.1]/", "http://[::ffff:127.0.0.1]/", "http://[2002:a00:1::]/",
    "http://2130706433/", "http://0x7f.1/", "http://240.0.0.1/", "http://255.255.255.255/",
])
def test_non_public_addresses_refused_before_connecting(url, host, routes):
    routes["/p.png"] = lambda h, _: h.reply(200, png_bytes(), "image/png")
    url = url.format(port=host.split(":")[1])
    with pytest.raises(OutboundRefused) as err:
        fetch(url, policy=OutboundPolicy(""), field="product_image_url")
    assert err.value.code == "INVALID_REQUEST"
    assert err.value.details[0]["field"] == "product_image_url"
    assert "public address" in err.value.message
    assert Handler.hits == []


@pytest.mark.parametrize("url, problem", [
    ("file:///etc/passwd", "scheme 'file'"), ("ftp://example.com/x.png", "scheme 'ftp'"),
    ("gopher://127.0.0.1:70/_x", "scheme 'gopher'"), ("javascript:alert(1)", "scheme"),
    ("//example.com/x.png", "scheme"), ("http:///x.png", "no host"), ("", "http or https"),
    ("http://user:pw@127.0.0.1/x.png", "credentials"), ("http://127.0.0.1:99999/", "valid"),
])
def test_malformed_urls_refused(url, problem):
    with pytest.raises(OutboundRefused) as err:
        LOOPBACK.check_url(url, field="target_url")
    assert problem in err.value.message
    assert [d["field"] for d in err.value.details] == ["target_url"]


def test_allowed_host_name_is_matched_case_insensitively(host, routes):
    routes["/p.png"] = lambda h, _: h.reply(200, b"ok")
    port = host.split(":")[1]
    policy = OutboundPolicy("LOCALHOST")
    assert fetch(f"http://LocalHost:{port}/p.png", policy=policy).content == b"ok"
    with pytest.raises(OutboundRefused):  # the name is allowed, not its address
        OutboundPolicy("localhost").check_url(f"http://127.0.0.1:{port}/p.png")


def test_public_and_non_public_classification():
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert is_public(address), address
    for address in ("10.0.0.1", "127.0.0.2", "::1", "fe80::1", "::ffff:192.168.0.1", "0.0.0.0",  # noqa: S104
                    "::", "169.254.169.254", "224.0.0.1", "2002:7f00:1::", "64:ff9b::a00:1",
                    "100.64.1.1", "fc00::5", "198.18.0.1"):
        assert not is_public(address), address
    policy = OutboundPolicy("10.0.0.0/8,fd00::/8,images.internal")
    assert policy.address_allowed("x", "10.9.9.9") and policy.address_allowed("x", "fd00::7")
    assert policy.address_allowed("images.internal.", "192.168.0.1")
    assert policy.address_allowed("x", "::ffff:10.1.1.1")
    assert not policy.address_allowed("x", "192.168.0.1")


def test_unresolvable_host_refused(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(OutboundRefused, match="could not be resolved"):
        OutboundPolicy("").check_url("https://no-such-host.invalid/x.png")


def test_dns_rebinding_caught_by_peer_check(host, routes, monkeypatch):
    """The name resolves to a public address when checked, then to loopback on connect:
    the socket's real peer is refused before any request is sent."""
    routes["/p.png"] = lambda h, _: h.reply(200, b"secret")
    real, calls = socket.getaddrinfo, []

    def rebinding(name, *args, **kwargs):
        if name == "rebind.example":
            calls.append(name)
            return real("93.184.216.34" if len(calls) == 1 else "127.0.0.1", *args, **kwargs)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.example:{host.split(':')[1]}/p.png"
    with pytest.raises(OutboundRefused, match=r"connected to 127\.0\.0\.1") as err:
        fetch(url, policy=OutboundPolicy(""), field="product_image_url")
    assert err.value.details[0]["field"] == "product_image_url"
    for send in (lambda u: post_json(u, b"{}", {}, policy=OutboundPolicy("")),
                 lambda u: fetch(u.replace("http:", "https:"), policy=OutboundPolicy(""))):
        assert len(calls) == 2
        calls.clear()
        with pytest.raises(OutboundRefused, match="connected to"):  # before any TLS too
            send(url)
    assert len(calls) == 2 and Handler.hits == []


def test_redirects_followed_and_rechecked(host, routes):
    routes["/a"] = lambda h, _: h.reply(302, headers=[("Location", "/b")])
    routes["/b"] = lambda h, _: h.reply(301, headers=[("Location", f"http://{host}/c")])
    routes["/c"] = lambda h, _: h.reply(200, b"done", "image/png")
    result = fetch(f"http://{host}/a", policy=LOOPBACK)
    assert (result.content, result.final_url) == (b"done", f"http://{host}/c")

    routes["/evil"] = lambda h, _: h.reply(302, headers=[("Location", "http://10.0.0.1/x")])
    with pytest.raises(OutboundRefused, match=r"10\.0\.0\.1"):
        fetch(f"http://{host}/evil", policy=LOOPBACK)
    routes["/meta"] = lambda h, _: h.reply(307, headers=[("Location", "http://169.254.169.254/")])
    with pytest.raises(OutboundRefused, match="link-local"):
        fetch(f"http://{host}/meta", policy=LOOPBACK)
    routes["/loop"] = lambda h, _: h.reply(302, headers=[("Location", "/loop")])
    Handler.hits.clear()
    with pytest.raises(OutboundRefused, match="more than 3 redirects"):
        fetch(f"http://{host}/loop", policy=LOOPBACK, max_redirects=3)
    assert len(Handler.hits) == 4


def test_error_status_refused(host, routes):
    with pytest.raises(OutboundRefused, match="answered HTTP 404"):
        fetch(f"http://{host}/nothing-here", policy=LOOPBACK)
    routes["/boom"] = lambda h, _: h.reply(500, b"oops")
    with pytest.raises(OutboundRefused, match="answered HTTP 500"):
        fetch(f"http://{host}/boom", policy=LOOPBACK)


def test_oversized_body_refused_with_and_without_content_length(host, routes):
    big = b"x" * 50_000
    routes["/big"] = lambda h, _: h.reply(200, big)

    def chunked(h, _):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(10):
            h.wfile.write(b"1388\r\n" + b"y" * 5000 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    routes["/chunked"] = chunked
    for path in ("/big", "/chunked"):
        with pytest.raises(OutboundRefused, match="larger than the 20000-byte limit"):
            fetch(f"http://{host}{path}", policy=LOOPBACK, max_bytes=20_000)
        assert len(fetch(f"http://{host}{path}", policy=LOOPBACK, max_bytes=50_000).content) \
            == 50_000


def test_accept_types(host, routes):
    routes["/page"] = lambda h, _: h.reply(200, b"<html>", "text/html; charset=utf-8")
    with pytest.raises(OutboundRefused, match="content type 'text/html'"):
        fetch(f"http://{host}/page", policy=LOOPBACK, accept_types=("image/",))
    assert fetch(f"http://{host}/page", policy=LOOPBACK, accept_types=("text/html",)).content


def test_timeouts_and_dead_ports_are_refused(host, routes):
    def sleepy(h, _):
        time.sleep(1.5)
        h.reply(200, b"late")

    def drip(h, _):
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"z")
            h.wfile.flush()
            time.sleep(0.05)

    routes["/sleepy"], routes["/drip"] = sleepy, drip
    with pytest.raises(OutboundRefused, match="timed out"):
        fetch(f"http://{host}/sleepy", policy=LOOPBACK, timeout=(1, 0.2))
    with pytest.raises(OutboundRefused, match="took too long"):
        fetch(f"http://{host}/drip", policy=LOOPBACK, timeout=(1, 0.5), deadline_s=0.3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(OutboundRefused, match="could not connect"):
        fetch(f"http://127.0.0.1:{dead}/", policy=LOOPBACK)
    with pytest.raises(OutboundRefused, match="TLS handshake failed"):  # a plain-HTTP server
        fetch(f"https://{host}/sleepy", policy=LOOPBACK, timeout=(1, 0.3))
    # "timed out" and "took too long" prove the limits fired before the server answered;
    # how quickly is measured in bench/, not asserted here.


def test_post_json(host, routes):
    seen = []

    def hook(h, body):
        seen.append((body, h.headers["Content-Type"], h.headers["Webhook-Id"]))
        h.reply(204)

    routes["/hook"] = hook
    routes["/gone"] = lambda h, _: h.reply(410)
    routes["/moved"] = lambda h, _: h.reply(308, headers=[("Location", "/hook")])
    headers = {"content-type": "application/json", "webhook-id": "msg_1"}
    assert post_json(f"http://{host}/hook", b'{"a":1}', headers, policy=LOOPBACK) == 204
    assert seen == [(b'{"a":1}', "application/json", "msg_1")]
    assert post_json(f"http://{host}/gone", b"{}", headers, policy=LOOPBACK) == 410
    assert post_json(f"http://{host}/moved", b"{}", headers, policy=LOOPBACK) == 308
    assert len(seen) == 1
    with pytest.raises(OutboundRefused, match="private"):
        post_json("http://192.168.1.1/hook", b"{}", headers, policy=LOOPBACK, field="target_url")
    with pytest.raises(OutboundRefused, match="loopback"):
        post_json(f"http://{host}/hook", b"{}", headers, policy=OutboundPolicy(""))


@pytest.mark.parametrize("fmt, mode, expected", [
    ("PNG", "RGB", "RGB"), ("PNG", "RGBA", "RGBA"), ("JPEG", "RGB", "RGB"),
    ("JPEG", "CMYK", "RGB"), ("WEBP", "RGBA", "RGBA"), ("GIF", "P", "RGB"), ("PNG", "L", "RGB"),
])
def test_images_accepted(fmt, mode, expected):
    colour = {"RGB": (10, 200, 30), "RGBA": (10, 200, 30, 128), "CMYK": (0, 50, 50, 0),
              "P": 3, "L": 90}[mode]
    image = load_image(png_bytes((64, 48), colour, mode, fmt))
    assert (image.size, image.mode) == ((64, 48), expected)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = load_image(buf.getvalue())
    assert image.getpixel((5, 5))[:3] == (255, 0, 0)


def _png_claiming(width, height):
    """A tiny valid-looking PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_decompression_bombs_refused():
    buf = io.BytesIO()  # a real, decodable 50-megapixel one-colour PNG of a few KiB
    Image.new("1", (10_000, 5_000), 1).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000
    for data in (buf.getvalue(), _png_claiming(20_000, 20_000), _png_claiming(8_000, 8_000)):
        with pytest.raises(ImageRefused, match="pixel|decompression bomb") as err:
            load_image(data, max_pixels=40_000_000)
        assert err.value.code == "INVALID_REQUEST"
    with pytest.raises(ImageRefused, match="100x100 pixels, over the 5000-pixel limit"):
        load_image(png_bytes((100, 100)), max_pixels=5000)


@pytest.mark.parametrize("data, problem", [
    (b"<html><body>not an image</body></html>", "not an image"),
    (b"", "not an image"),
    (png_bytes(fmt="BMP"), "not an image in an accepted format"),
    (png_bytes(fmt="TIFF"), "not an image"),
    (png_bytes((300, 300), (1, 2, 3), fmt="JPEG")[:400], "corrupt or truncated"),
])
def test_non_images_refused(data, problem):
    with pytest.raises(ImageRefused, match=problem) as err:
        load_image(data, field="product_image_url")
    assert err.value.details[0]["field"] == "product_image_url"


def test_exif_orientation_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view", as phones store portrait shots
    buf = io.BytesIO()
    Image.new("RGB", (60, 20), (9, 9, 9)).save(buf, "JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue()).size == (20, 60)
