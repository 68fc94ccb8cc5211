"""The one rule for every URL the gateway fetches or posts to (CONTRACT section 6).

A caller-supplied URL must never become a way into the operator's own network (SSRF):
http/https only, no credentials, and no private, loopback, link-local, multicast or
otherwise non-public address unless ``OUTBOUND_ALLOW_HOSTS`` names the host or address.
``check_url`` resolves the name up front so refusals happen before any connection; the
guarded connections below then check the socket's real peer, because a name may resolve
differently a moment later (DNS rebinding). Every refusal is an ``InvalidRequest``.
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import socket
import time
import warnings
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image, ImageOps, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from urllib3 import connection as u3conn
from urllib3 import connectionpool, poolmanager
from urllib3 import exceptions as u3exc

from core.errors import InvalidRequest

REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(InvalidRequest):
    """A URL the gateway will not fetch, or a fetch that failed; names the field."""

    def __init__(self, problem, field="url"):
        super().__init__(f"{field}: {problem}", details=[{"field": field, "problem": problem}])
        self.field = field


class ImageRefused(OutboundRefused):
    """Fetched bytes that are not an acceptable image."""


def _embedded_v4(ip):
    """The IPv4 address hidden in an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip) -> bool:
    """True for a globally routable unicast address (and any IPv4 it embeds)."""
    ip = ipaddress.ip_address(ip)
    if ip.version == 6 and ip.ipv4_mapped:  # how a dual-stack socket reports an IPv4 peer
        return is_public(ip.ipv4_mapped)
    if (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_multicast or ip.is_reserved or ip.is_unspecified):
        return False
    inner = _embedded_v4(ip)
    return inner is None or is_public(inner)


def _kind(address) -> str:
    """A word for why an address is refused, for the error message."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    ip = _embedded_v4(ip) if ip.version == 6 and ip.ipv4_mapped else ip
    for attr in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{attr}"):
            return attr.replace("_", "-")
    return "not globally routable"


class OutboundPolicy:
    """Which destinations are allowed: public addresses, plus the operator's exceptions."""

    def __init__(self, allow=""):
        self.hosts, self.networks = set(), []
        for entry in filter(None, (e.strip() for e in (allow or "").split(","))):
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    @classmethod
    def from_config(cls, config) -> OutboundPolicy:
        return cls(config.outbound_allow_hosts)

    def address_allowed(self, host, address) -> bool:
        """Whether a connection to ``address`` (for URL host ``host``) may proceed."""
        if (host or "").lower().rstrip(".") in self.hosts:
            return True
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        candidates = [ip] + ([_embedded_v4(ip)] if _embedded_v4(ip) else [])
        if any(c in net for c in candidates for net in self.networks if c.version == net.version):
            return True
        return is_public(ip)

    def check_url(self, url, field="url") -> str:
        """Refuse a URL the gateway must not contact; returns its lower-cased host."""
        if not isinstance(url, str) or not url:
            raise OutboundRefused("must be an http or https URL", field)
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise OutboundRefused("is not a valid URL", field) from None
        if parts.scheme.lower() not in ("http", "https"):
            raise OutboundRefused(f"scheme {parts.scheme or '(none)'!r} is not allowed; "
                                  "only http and https URLs are fetched", field)
        if parts.username is not None or parts.password is not None:
            raise OutboundRefused("must not contain credentials (user:password@)", field)
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise OutboundRefused("has no host", field)
        try:
            infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError, OSError):
            raise OutboundRefused(f"host {host!r} could not be resolved", field) from None
        for address in dict.fromkeys(info[4][0] for info in infos):
            if not self.address_allowed(host, address):
                where = f"address {address}" if host.strip("[]") == address else \
                    f"host {host!r} resolves to {address}, which"
                raise OutboundRefused(f"{where} is not a public address ({_kind(address)}); "
                                      "the gateway only contacts public addresses", field)
        return host

    def session(self) -> requests.Session:
        """A ``requests.Session`` whose every connection is peer-checked by this policy.

        ``trust_env`` is off: an environment proxy would make the proxy the peer, and a
        ``.netrc`` would add the operator's credentials to a stranger's URL.
        """
        session = requests.Session()
        session.trust_env = False
        adapter = _GuardedAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


class _PeerCheck:
    """Mixin for urllib3 connections: check the connected socket's peer before any byte
    is sent (before the TLS handshake too), as the name may have been re-resolved."""

    policy: OutboundPolicy | None = None

    def _new_conn(self):
        sock = super()._new_conn()
        peer = sock.getpeername()[0]
        if self.policy is None or not self.policy.address_allowed(self.host, peer):
            sock.close()
            raise OutboundRefused(f"host {self.host!r} connected to {peer}, not a public "
                                  f"address ({_kind(peer)}); the gateway only contacts "
                                  "public addresses")
        return sock


class _HTTPConnection(_PeerCheck, u3conn.HTTPConnection):
    pass


class _HTTPSConnection(_PeerCheck, u3conn.HTTPSConnection):
    pass


class _PoolMixin:
    policy: OutboundPolicy | None = None

    def _new_conn(self):
        conn = super()._new_conn()
        conn.policy = self.policy
        return conn


class _HTTPPool(_PoolMixin, connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_PoolMixin, connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _GuardedPoolManager(poolmanager.PoolManager):
    def __init__(self, policy, **kw):
        super().__init__(**kw)
        self.policy = policy
        self.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def _new_pool(self, scheme, host, port, request_context=None):
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.policy = self.policy
        return pool


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy):
        self.policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _GuardedPoolManager(self.policy, num_pools=connections,
                                               maxsize=maxsize, block=block, **pool_kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise OutboundRefused("proxies are not used for outbound requests")


@dataclasses.dataclass(frozen=True)
class FetchResult:
    content: bytes
    content_type: str
    final_url: str


def _describe(exc) -> str:
    if isinstance(exc, requests.Timeout | u3exc.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    return "request failed"


def fetch(url, *, policy, field="url", max_bytes=10 * 2**20, timeout=(3.05, 10),
          max_redirects=5, accept_types=None, deadline_s=60.0, sink=None,
          too_large=None) -> FetchResult:
    """GET ``url`` under ``policy``: redirects re-checked hop by hop, the body capped at
    ``max_bytes`` and ``deadline_s`` overall (a slow drip cannot hold a worker forever).

    With ``sink`` (a callable taking each chunk) the body is handed on as it arrives and
    never held whole: ``content`` is then empty (uploads by URL stream to disk).
    ``too_large`` makes the error for a body over ``max_bytes`` (default: a refusal of
    the URL, 400; uploads answer 413 like an upload over the limit)."""
    deadline, url = time.monotonic() + deadline_s, str(url).strip()
    with policy.session() as session:
        for _ in range(max_redirects + 1):
            policy.check_url(url, field)
            resp = _send(session, "GET", url, field, timeout=timeout,
                         headers={"User-Agent": "metered-gateway-fetch/1"})
            with resp:
                if resp.status_code in REDIRECTS and resp.headers.get("Location"):
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if not 200 <= resp.status_code < 300:
                    raise OutboundRefused(f"{url} answered HTTP {resp.status_code}", field)
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if accept_types is not None and not any(
                        ctype == t or (t.endswith("/") and ctype.startswith(t))
                        for t in accept_types):
                    raise OutboundRefused(f"{url} has content type {ctype or '(none)'!r}",
                                          field)
                content = _read_capped(resp, url, field, max_bytes, deadline, sink, too_large)
                return FetchResult(content=content, content_type=ctype, final_url=url)
    raise OutboundRefused(f"more than {max_redirects} redirects", field)


def _read_capped(resp, url, field, max_bytes, deadline, sink=None, too_large=None) -> bytes:
    def too_big():
        if too_large is not None:
            return too_large()
        return OutboundRefused(f"{url} is larger than the {max_bytes}-byte limit", field)

    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_big()
    buf, seen = bytearray(), 0
    while True:  # read1: at most one socket read per call, so the deadline is checked
        try:
            chunk = resp.raw.read1(65536, decode_content=True)
        except (u3exc.HTTPError, requests.RequestException, OSError, ValueError) as exc:
            raise OutboundRefused(f"{_describe(exc)} reading {url}", field) from None
        if not chunk:
            return bytes(buf)
        seen += len(chunk)
        if seen > max_bytes:
            raise too_big()
        if sink is None:
            buf += chunk
        else:
            sink(chunk)
        if time.monotonic() > deadline:
            raise OutboundRefused(f"fetching {url} took too long", field)


def _send(session, method, url, field, **kw):
    """One request, never redirected; failures become ``OutboundRefused`` for ``field``."""
    try:
        return session.request(method, url, allow_redirects=False, stream=True, **kw)
    except OutboundRefused as exc:  # the peer check, raised below requests
        raise OutboundRefused(exc.details[0]["problem"], field) from None
    except (requests.RequestException, u3exc.HTTPError, OSError, ValueError) as exc:
        raise OutboundRefused(f"{_describe(exc)} ({method} {url})", field) from None


def post_json(url, body_bytes, headers, *, policy, timeout=(3.05, 15), field="url") -> int:
    """POST a JSON body (webhooks, callbacks); redirects are not followed. Returns the
    status code; an unreachable or refused target raises ``OutboundRefused``."""
    return post_json_answer(url, body_bytes, headers, policy=policy, timeout=timeout,
                            field=field)[0]


def post_json_answer(url, body_bytes, headers, *, policy, timeout=(3.05, 15), field="url",
                     excerpt_bytes=0) -> tuple[int, bytes]:
    """``post_json`` that also reads the first ``excerpt_bytes`` of the answer (a webhook
    delivery log shows them): ``(status, excerpt)``. One socket read at most (``read1``),
    so a receiver answering a huge, endless or dripping body cannot hold the worker."""
    url = str(url).strip()
    policy.check_url(url, field)
    with policy.session() as session:
        resp = _send(session, "POST", url, field, data=body_bytes, headers=headers,
                     timeout=timeout)
        with resp:
            excerpt = b""
            if excerpt_bytes:
                try:
                    excerpt = resp.raw.read1(excerpt_bytes, decode_content=True) or b""
                except (u3exc.HTTPError, requests.RequestException, OSError, ValueError):
                    excerpt = b""  # the status already came; a broken body is no failure
            return resp.status_code, excerpt[:excerpt_bytes]


def load_image(content, *, max_pixels=40_000_000, formats=("JPEG", "PNG", "WEBP", "GIF"),
               field="url") -> Image.Image:
    """Decode fetched bytes into an RGB or RGBA image (first frame of an animation).

    The size is checked from the header before decoding (``Image.open`` is lazy), so a
    small file claiming a huge canvas (a decompression bomb) never gets decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(content), formats=list(formats))
            if img.width * img.height > max_pixels or img.width <= 0 or img.height <= 0:
                raise ImageRefused(f"image is {img.width}x{img.height} pixels, over the "
                                   f"{max_pixels}-pixel limit", field)
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos: stored sideways, EXIF-rotated
            alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
            return img.convert("RGBA" if alpha else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused("image is too large to decode (decompression bomb)", field) from None
    except UnidentifiedImageError:
        raise ImageRefused(f"is not an image in an accepted format ({', '.join(formats)})",
                           field) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageRefused("image is corrupt or truncated", field) from None
