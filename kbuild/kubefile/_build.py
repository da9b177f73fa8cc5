"""From a parse tree of one logical line to typed instruction objects."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable

from lark import Token, Tree

from kbuild.kubefile import instructions as ins
from kbuild.kubefile._source import LogicalLine, Source
from kbuild.kubefile.expand import check, unquote

#: App names: DNS labels (RFC 1123), as Kubernetes names resources.
APP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_STAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHMOD = re.compile(r"^[0-7]{3,4}$")
_CHECKSUM = re.compile(r"^sha256:[0-9a-f]{64}$")
_PORT = re.compile(r"^\d{1,5}(-\d{1,5})?(/(tcp|udp|sctp))?$", re.IGNORECASE)
_SIGNAL = re.compile(r"^(SIG[A-Z0-9+-]+|[A-Z][A-Z0-9+-]*|\d{1,3})$")
_VERSION_TERM = re.compile(
    r"^(>=|<=|>|<|=|==|!=|~|\^)?v?(\d+|[xX*])(\.(\d+|[xX*])){0,2}"
    r"(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)

_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "COPY": ("from", "chmod", "chown"),
    "ADD": ("chmod", "chown", "checksum"),
    "RUN": (),
    "IMAGE": ("app",),
}


class Builder:
    """Turns the parse tree of one logical line into instruction objects."""

    def __init__(self, src: Source, ll: LogicalLine, keyword: str) -> None:
        self.src = src
        self.ll = ll
        self.keyword = keyword
        self.escape = src.escape
        line, column = ll.locate(0)
        self.pos = ins.Position(src.filename, line, column, ll.end_line)
        self.original = ll.text
        #: Positions of names for the rule checks: (kind, name) -> (line, col).
        self.name_pos: dict[str, tuple[int, int]] = {}

    # -- helpers ---------------------------------------------------------

    def fail(self, offset: int, message: str, hint: str | None = None) -> Exception:
        """The error at ``offset`` of this logical line."""
        return self.src.error_at(self.ll, offset, message, hint=hint)

    def word(self, tok: Token) -> str:
        """A shell word, unquoted, with its ``${…}`` syntax checked."""
        return self.expandable(unquote(str(tok), self.escape), tok.start_pos or 0)

    def expandable(self, value: str, offset: int) -> str:
        """``value`` after checking its ``${…}`` syntax."""
        problem = check(value)
        if problem is not None:
            raise self.fail(offset, f"bad variable reference: {problem[1]}")
        return value

    def json(self, tok: Token) -> tuple[str, ...]:
        """The strings of a JSON array token."""
        value = json.loads(str(tok))
        return tuple(str(v) for v in value)

    def flags(self, toks: list[Token]) -> dict[str, str]:
        """Check the ``--name=value`` flags against those the instruction takes."""
        allowed = _FLAGS.get(self.keyword, ())
        out: dict[str, str] = {}
        for tok in toks:
            text = str(tok)
            name, eq, raw = text[2:].partition("=")
            offset = tok.start_pos or 0
            lname = name.lower()
            if lname not in allowed:
                if not allowed:
                    raise self.fail(offset, f"{self.keyword} takes no flags, found --{name}")
                close = difflib.get_close_matches(lname, allowed, n=1)
                hint = (
                    f"did you mean --{close[0]}?"
                    if close
                    else "flags of " + self.keyword + ": " + ", ".join("--" + a for a in allowed)
                )
                raise self.fail(offset, f"unknown flag --{name} for {self.keyword}", hint)
            if lname in out:
                raise self.fail(offset, f"the flag --{lname} is given twice")
            value = unquote(raw, self.escape) if eq else ""
            if not value:
                raise self.fail(offset, f"the flag --{lname} needs a value (--{lname}=VALUE)")
            out[lname] = self.expandable(value, offset)
            literal = "$" not in value
            if lname == "chmod" and literal and not _CHMOD.match(value):
                raise self.fail(offset, f"--chmod={value} is not an octal mode like 0644")
            if lname == "checksum" and literal and not _CHECKSUM.match(value):
                raise self.fail(
                    offset, f"--checksum={value} is not of the form sha256:<64 hex digits>"
                )
        return out

    def app_name(self, tok: Token) -> str:
        """An app name, checked to be a DNS label."""
        name = str(tok)
        if len(name) > 63 or not APP_NAME.match(name):
            raise self.fail(
                tok.start_pos or 0,
                f"invalid app name {name!r}",
                "app names are DNS labels: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters",
            )
        return name

    def pairs(self, toks: list[Token]) -> tuple[tuple[str, str], ...]:
        """KEY=VALUE tokens as (key, value), both unquoted."""
        out = []
        for tok in toks:
            raw_key, raw_value = _split_pair(str(tok), self.escape)
            key = unquote(raw_key, self.escape)
            offset = tok.start_pos or 0
            if not key.strip():
                raise self.fail(offset, "empty name before '='")
            out.append(
                (
                    self.expandable(key, offset),
                    self.expandable(unquote(raw_value, self.escape), offset + len(raw_key) + 1),
                )
            )
        return tuple(out)

    # -- instructions ----------------------------------------------------

    def build(self, tree: Tree[Token]) -> list[ins.Instruction]:
        """The instruction(s) of this line (``ARG a b`` gives two)."""
        rule = tree.children[0]
        assert isinstance(rule, Tree)
        toks = [t for t in rule.children if isinstance(t, Token)][1:]
        method: Callable[[list[Token]], list[ins.Instruction]] = getattr(
            self, "_" + str(rule.data).rstrip("_")
        )
        return method(toks)

    def _of(self, toks: list[Token], *types: str) -> list[Token]:
        return [t for t in toks if t.type in types]

    def _from(self, toks: list[Token]) -> list[ins.Instruction]:
        flags = self.flags(self._of(toks, "FLAG"))
        words = self._of(toks, "WORD")
        alias: str | None = None
        if len(words) > 1:
            tok = words[1]
            alias = str(tok)
            if not _STAGE_NAME.match(alias):
                raise self.fail(
                    tok.start_pos or 0,
                    f"invalid stage name {alias!r}",
                    "a stage name starts with a letter and holds letters, digits, '_', '.', '-'",
                )
            alias = alias.lower()
            self.name_pos["alias"] = self.ll.locate(tok.start_pos or 0)
        image = self.word(words[0])
        if not image:
            raise self.fail(words[0].start_pos or 0, "empty image name")
        return [ins.From(self.pos, self.original, image, flags.get("platform"), alias)]

    def _arg(self, toks: list[Token]) -> list[ins.Instruction]:
        out: list[ins.Instruction] = []
        for tok in toks:
            raw = str(tok)
            name, eq, raw_default = raw.partition("=")
            if not _VAR_NAME.match(name):
                raise self.fail(
                    tok.start_pos or 0,
                    f"invalid ARG name {name!r}",
                    "a name holds letters, digits and '_' and does not start with a digit",
                )
            default = None
            if eq:
                default = self.expandable(
                    unquote(raw_default, self.escape), (tok.start_pos or 0) + len(name) + 1
                )
            out.append(ins.Arg(self.pos, self.original, name, default))
        return out

    def _legacy_pair(self, toks: list[Token]) -> tuple[tuple[str, str], ...]:
        name, rest = toks
        value = unquote(str(rest).rstrip(), self.escape)
        return ((str(name), self.expandable(value, rest.start_pos or 0)),)

    def _env(self, toks: list[Token]) -> list[ins.Instruction]:
        pairs = self._legacy_pair(toks) if toks[0].type == "NAME" else self.pairs(toks)
        return [ins.Env(self.pos, self.original, pairs)]

    def _label(self, toks: list[Token]) -> list[ins.Instruction]:
        pairs = self._legacy_pair(toks) if toks[0].type == "NAME" else self.pairs(toks)
        return [ins.Label(self.pos, self.original, pairs)]

    def _maintainer(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.Maintainer(self.pos, self.original, str(toks[0]).strip())]

    def _paths(self, toks: list[Token]) -> tuple[tuple[str, ...], str]:
        arr = self._of(toks, "JSON_ARRAY")
        if arr:
            items = self.json(arr[0])
            offset = arr[0].start_pos or 0
            if len(items) < 2:
                raise self.fail(
                    offset, f"{self.keyword} needs at least one source and a destination"
                )
            for item in items:
                self.expandable(item, offset)
        else:
            items = tuple(self.word(t) for t in self._of(toks, "WORD"))
        for item in items:
            if not item:
                raise self.fail(0, f"{self.keyword} has an empty path")
        return items[:-1], items[-1]

    def _copy(self, toks: list[Token]) -> list[ins.Instruction]:
        flags = self.flags(self._of(toks, "FLAG"))
        sources, dest = self._paths(toks)
        if "from" in flags:
            flag_tok = next(t for t in toks if str(t).lower().startswith("--from"))
            self.name_pos["from"] = self.ll.locate(flag_tok.start_pos or 0)
        return [
            ins.Copy(self.pos, self.original, sources, dest, flags.get("from"),
                     flags.get("chmod"), flags.get("chown"))
        ]  # fmt: skip

    def _add(self, toks: list[Token]) -> list[ins.Instruction]:
        flags = self.flags(self._of(toks, "FLAG"))
        sources, dest = self._paths(toks)
        return [
            ins.Add(self.pos, self.original, sources, dest, None, flags.get("chmod"),
                    flags.get("chown"), flags.get("checksum"))
        ]  # fmt: skip

    def _command(self, toks: list[Token]) -> tuple[str | None, tuple[str, ...] | None]:
        arr = self._of(toks, "JSON_ARRAY")
        if arr:
            return None, self.json(arr[0])
        return str(self._of(toks, "REST")[0]).strip(), None

    def _run(self, toks: list[Token]) -> list[ins.Instruction]:
        self.flags(self._of(toks, "FLAG"))
        command, argv = self._command(toks)
        heredocs = tuple((h.name, h.body) for h in self.ll.heredocs)
        return [ins.Run(self.pos, self.original, command, argv, heredocs)]

    def _cmd(self, toks: list[Token]) -> list[ins.Instruction]:
        command, argv = self._command(toks)
        return [ins.Cmd(self.pos, self.original, command, argv)]

    def _entrypoint(self, toks: list[Token]) -> list[ins.Instruction]:
        command, argv = self._command(toks)
        return [ins.Entrypoint(self.pos, self.original, command, argv)]

    def _nonempty_json(self, tok: Token, what: str) -> tuple[str, ...]:
        items = self.json(tok)
        if not items:
            raise self.fail(tok.start_pos or 0, f"{self.keyword} needs at least one {what}")
        for item in items:
            if not item.strip():
                raise self.fail(tok.start_pos or 0, f"{self.keyword} has an empty {what}")
        return items

    def _cmds(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.Cmds(self.pos, self.original, self._nonempty_json(toks[0], "command"))]

    def _launch(self, toks: list[Token]) -> list[ins.Instruction]:
        tok = toks[0]
        apps = self._nonempty_json(tok, "app name")
        seen: set[str] = set()
        for name in apps:
            if name in seen:
                raise self.fail(tok.start_pos or 0, f"LAUNCH names the app {name!r} twice")
            seen.add(name)
            self.app_name(Token("NAME", name, start_pos=tok.start_pos))
        self.name_pos["launch"] = self.ll.locate(tok.start_pos or 0)
        return [ins.Launch(self.pos, self.original, apps)]

    def _app_like(self, toks: list[Token]) -> tuple[str, tuple[str, ...]]:
        name = self.app_name(toks[0])
        self.name_pos["app"] = self.ll.locate(toks[0].start_pos or 0)
        sources = tuple(self.word(t) for t in toks[1:])
        for tok, src in zip(toks[1:], sources, strict=True):
            if not src:
                raise self.fail(tok.start_pos or 0, f"{self.keyword} has an empty source")
        return name, sources

    def _app(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.App(self.pos, self.original, *self._app_like(toks))]

    def _cni(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.Cni(self.pos, self.original, *self._app_like(toks))]

    def _csi(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.Csi(self.pos, self.original, *self._app_like(toks))]

    def _appcmds(self, toks: list[Token]) -> list[ins.Instruction]:
        name = self.app_name(toks[0])
        self.name_pos["app"] = self.ll.locate(toks[0].start_pos or 0)
        cmds = self._nonempty_json(toks[1], "command")
        return [ins.AppCmds(self.pos, self.original, name, cmds)]

    def _appenv(self, toks: list[Token]) -> list[ins.Instruction]:
        name = self.app_name(toks[0])
        self.name_pos["app"] = self.ll.locate(toks[0].start_pos or 0)
        return [ins.AppEnv(self.pos, self.original, name, self.pairs(toks[1:]))]

    def _kubeversion(self, toks: list[Token]) -> list[ins.Instruction]:
        text = str(toks[0]).strip()
        for m in re.finditer(r"[^\s,]+", text):
            term = m.group(0)
            if term in ("||", "-") or _VERSION_TERM.match(term):
                continue
            raise self.fail(
                (toks[0].start_pos or 0) + m.start(),
                f"{term!r} is not a version constraint",
                "write constraints like >=v1.22.0 <v1.31.0, ~1.30, 1.29.x or 1.28 - 1.30",
            )
        return [ins.KubeVersion(self.pos, self.original, text)]

    def _workdir(self, toks: list[Token]) -> list[ins.Instruction]:
        path = unquote(str(toks[0]).rstrip(), self.escape)
        return [ins.Workdir(self.pos, self.original, self.expandable(path, toks[0].start_pos or 0))]

    def _user(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.User(self.pos, self.original, self.word(toks[0]))]

    def _expose(self, toks: list[Token]) -> list[ins.Instruction]:
        ports = []
        for tok in toks:
            port = self.word(tok)
            if "$" not in port and not _PORT.match(port):
                raise self.fail(
                    tok.start_pos or 0,
                    f"invalid port {port!r}",
                    "write PORT, PORT/tcp, PORT/udp or a range like 8000-8010/tcp",
                )
            ports.append(port)
        return [ins.Expose(self.pos, self.original, tuple(ports))]

    def _volume(self, toks: list[Token]) -> list[ins.Instruction]:
        arr = self._of(toks, "JSON_ARRAY")
        if arr:
            paths = self._nonempty_json(arr[0], "path")
            for p in paths:
                self.expandable(p, arr[0].start_pos or 0)
        else:
            paths = tuple(self.word(t) for t in toks)
        return [ins.Volume(self.pos, self.original, paths)]

    def _stopsignal(self, toks: list[Token]) -> list[ins.Instruction]:
        sig = self.word(toks[0])
        if "$" not in sig and not _SIGNAL.match(sig):
            raise self.fail(
                toks[0].start_pos or 0,
                f"invalid signal {sig!r}",
                "write a signal name like SIGTERM or a number like 15",
            )
        return [ins.StopSignal(self.pos, self.original, sig)]

    def _image(self, toks: list[Token]) -> list[ins.Instruction]:
        flag_toks = self._of(toks, "FLAG")
        flags = self.flags(flag_toks)
        app = flags.get("app")
        if app is not None:
            tok = next(t for t in flag_toks if str(t).lower().startswith("--app"))
            self.app_name(Token("NAME", app, start_pos=(tok.start_pos or 0) + len("--app=")))
            self.name_pos["app"] = self.ll.locate(tok.start_pos or 0)
        refs = tuple(self.word(t) for t in self._of(toks, "WORD"))
        for tok, ref in zip(self._of(toks, "WORD"), refs, strict=True):
            if not ref:
                raise self.fail(tok.start_pos or 0, "IMAGE has an empty reference")
        return [ins.Image(self.pos, self.original, refs, app)]

    def _shell(self, toks: list[Token]) -> list[ins.Instruction]:
        return [ins.Shell(self.pos, self.original, self._nonempty_json(toks[0], "argument"))]


def _split_pair(raw: str, escape: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` at the first ``=`` outside quotes and escapes."""
    i, n = 0, len(raw)
    quote: str | None = None
    while i < n:
        c = raw[i]
        if c == escape and quote != "'":
            i += 2
            continue
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return raw[:i], raw[i + 1 :]
        i += 1
    return raw, ""
