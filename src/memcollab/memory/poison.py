"""The content screen against memory poisoning: constraints carry reasoning, never instructions.

A constraint is served into other agents' prompts, so a record written by an attacker (an
import, an API write, a distiller talked into it by a crafted trajectory) could carry
instructions: a URL to visit, a shell command, "ignore previous instructions", a role to
play, a chat-template token, a secret, a tool call, a request to leak the prompt. This
screen refuses such text with a reason code (`POISON_REASONS`, in priority order: the first
that matches is the verdict's `reason`; `reasons` lists every one that matched):

* chat_token: chat-template and special tokens (<|im_start|>, </s>, [INST], <<SYS>>,
  <start_of_turn>, <|eot_id|> ...);
* override: "ignore / disregard / forget the previous instructions", "new instructions",
  also in French, German, Spanish, Italian, Portuguese, Chinese, Japanese and Russian;
* role_play: "you are now", "act as", "pretend to be", "developer mode", a role tag
  ("system:", "assistant:") opening a part, and the same in other languages;
* exfiltration: "include the contents of", "reveal the system prompt", your instructions,
  environment variables, /etc/passwd, ~/.ssh ...;
* tool_use: "call the ... tool", tool_call, "send ... to", fetch, e-mail (and addresses),
  upload, download, webhook, visit a site;
* secret: API-key shapes (sk-..., AKIA..., ghp_..., xox?-..., AIza..., JWTs), private-key
  headers, "password: ..." / "api_key = ..." assignments, bearer tokens;
* shell: curl, wget, rm -rf, pip/npm/apt install, sh -c, powershell, sudo, chmod, | sh ...;
* code_exec: import os / subprocess, os.system, eval( / exec(, __import__, <script>,
  javascript: ...;
* image_beacon: markdown images and <img> tags (a rendered image fetches its URL);
* url: a scheme://, www., a host under a common top-level domain, an IPv4 address, a
  defanged dot ("[.]", "(dot)");
* encoded: base64 blobs, long hex strings, runs of \\x / \\u / %XX / &#..; escapes,
  "decode this base64";
* homoglyph: a word mixing Latin letters with Cyrillic or Greek look-alikes;
* hidden_chars: zero-width, bidi-control, tag and other invisible format characters.

Text is normalised before matching, so trivial obfuscations fail: NFKC (fullwidth and
mathematical letters become ASCII), invisible format characters removed, case folded,
whitespace collapsed; the rules then run on that text, on its homoglyph skeleton (Cyrillic
and Greek look-alikes mapped to Latin), on the skeleton with leetspeak digits read as
letters (phrase rules only), and a few long phrases on the letters alone ("i g n o r e
p r e v i o u s ..."). The rules are hand-written regular expressions: no maintained
library screens short reasoning sentences for prompt injection offline (the known
classifiers are models or hosted services), and every rule here is checked against every
committed constraint (tests/memory/test_poison.py: no honest constraint refused) and
against the red-team set (tests/memory/redteam/poisoned.jsonl: every entry refused with
its expected reason).

A record is screened whole: every part of every constraint, each alone and as the served
sentence; its task text for invisible characters, chat tokens and overrides (it is not
served, but it is stored and shown); its short fields (namespace, labels, models,
distiller, source id) for everything but the encoded rule.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memcollab.errors import UserError
from memcollab.memory.record import Constraint, MemoryRecord

POISON_REASONS = (
    "chat_token",
    "override",
    "role_play",
    "exfiltration",
    "tool_use",
    "secret",
    "shell",
    "code_exec",
    "image_beacon",
    "url",
    "encoded",
    "homoglyph",
    "hidden_chars",
)
_PRIORITY = {reason: i for i, reason in enumerate(POISON_REASONS)}


class PoisonError(UserError):
    """A record (or a file of records) refused by the content screen."""


# --------------------------------------------------------------------------- normalising

# Look-alikes of Latin letters in Cyrillic and Greek (lower case, as after casefold), the
# ones that homoglyph attacks use; not a full confusables table (that lives in ICU, which
# this package does not depend on): these cover the letters of every phrase rule.
_CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "һ": "h",
        "ӏ": "l",
        "ԛ": "q",
        "ԝ": "w",
        "ɡ": "g",
        "ɑ": "a",
        "α": "a",
        "β": "b",
        "ε": "e",
        "η": "n",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ω": "w",
        "ϲ": "c",
    }
)
_CONFUSABLE_CHARS = frozenset(chr(k) for k in _CONFUSABLES)
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_KEEP_CONTROLS = frozenset("\t\n\r")


def _invisible(ch: str) -> bool:
    """Format characters (zero-width, bidi controls, tags, soft hyphen), controls other
    than tab and newlines, and variation selectors: nothing an honest constraint needs."""
    category = unicodedata.category(ch)
    if category == "Cf":
        return True
    if category == "Cc":
        return ch not in _KEEP_CONTROLS
    code = ord(ch)
    return 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF


def normalise(text: str) -> str:
    """NFKC, invisible characters removed, case folded, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if not _invisible(ch))
    return " ".join(text.casefold().split())


def skeleton(normalised: str) -> str:
    """Cyrillic and Greek look-alikes read as the Latin letters they imitate."""
    return normalised.translate(_CONFUSABLES)


# --------------------------------------------------------------------------- the rules

_W = r"[\w\s,'’\-]"  # the words between a verb and its object in a phrase rule


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_CHAT_TOKEN = _rx(
    r"<\|[a-z_ ]{2,30}\|>",  # <|im_start|>, <|endoftext|>, <|eot_id|>, <|system|>
    r"</?s>",
    r"\[/?inst\]",
    r"<</?sys>>",
    r"<(?:start|end)_of_turn>",
    r"<\|?(?:begin|end)_of_text\|?>",
    r"</?(?:system|assistant|user|developer|tool_call|function_call)>",
    r"\|im_(?:start|end)\|",
)

_OVERRIDE = _rx(
    # English: a verb, then (within a few words) an earlier-instructions object.
    rf"\b(?:ignore|disregard|forget|override|bypass|overrule|skip|drop|abandon)\b{_W}{{0,40}}?"
    r"\b(?:instructions?|prompts?|directives?|guardrails?|guidelines|system message|rules above"
    r"|above rules|previous rules|prior rules|all rules|your rules|safety rules|programming)\b",
    r"\bnew (?:instructions?|directives?|system prompt)\s*:",
    r"\b(?:updated|revised|real|actual|true) instructions?\s*:",
    r"\bdo anything now\b",
    r"\bfrom now on\b",
    r"\bdo not follow (?:the|your|any)\b",
    # French
    rf"\b(?:ignore[zrs]?|oublie[zrs]?|ne tiens pas compte|ne tenez pas compte){_W}{{0,40}}?"
    r"\b(?:instructions?|consignes?|directives?|règles)\b",
    # German
    rf"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen sie|missachte){_W}{{0,40}}?"
    r"\b(?:anweisungen|instruktionen|befehle|vorgaben|regeln)\b",
    # Spanish, Italian, Portuguese
    rf"\b(?:ignora[rd]?|ignore[ms]?|olvida[rd]?|esquece|esqueça|dimentica){_W}{{0,40}}?"
    r"\b(?:instrucciones|instruções|istruzioni|indicaciones|reglas|regole|regras)\b",
    # Chinese, Japanese (object before or after the verb)
    r"(?:忽略|无视|忽视|忘记|忘掉|不要理会|無視|忘れ)[^。.!！]{0,12}(?:指令|指示|说明|提示|规则|指南|命令|命令)",
    r"(?:指令|指示|说明|提示|规则|命令)[^。.!！]{0,12}(?:忽略|无视|忽视|忘记|無視|忘れ)",
    # Russian
    r"\b(?:игнорируй(?:те)?|игнорировать|забудь(?:те)?|не обращай(?:те)? внимания на|отбрось)"
    r"[\w\s,\-]{0,40}?(?:инструкци\w*|указани\w*|правил\w*|команд\w*)",
)

_ROLE_PLAY = _rx(
    r"\byou are now\b",
    r"\byou're now\b",
    r"\byou will now (?:act|be|behave|respond)\b",
    r"\bact as (?:a|an|the|if|my)\b",
    r"\bpretend (?:to be|you are|you're|that you)\b",
    r"\brole-?play\b",
    r"\b(?:developer|god|jailbreak|dan) mode\b",
    r"\bjailbr[eo]ak\w*\b",
    r"\bstay in character\b",
    r"^\s*(?:#+\s*)?\[?(?:system|assistant|user|developer)\]?\s*:",
    r"(?:^|\s)#{2,}\s*(?:system|instruction|assistant)\b",
    r"\bsystem (?:prompt|message|override)\s*:",
    # other languages
    r"\b(?:tu es|vous êtes) (?:maintenant|désormais)\b",
    r"\bdu bist (?:jetzt|nun|ab sofort)\b",
    r"\b(?:ahora eres|ahora serás|a partir de ahora eres)\b",
    r"\b(?:ora sei|adesso sei)\b",
    r"(?:你现在是|从现在开始你|你将扮演|扮演一个|假装你是)",
    r"(?:теперь ты|ты теперь|притворись|представь, что ты)",
)

_EXFILTRATION = _rx(
    r"\binclude the (?:full |entire |whole )?contents? of\b",
    rf"\b(?:reveal|print|output|show|display|repeat|leak|dump|echo|tell me|disclose|expose"
    rf"|exfiltrate|send|copy|paste|include|append|insert|write out){_W}{{0,30}}?"
    r"\b(?:system prompt|hidden prompt|initial prompt|original prompt|developer message"
    r"|system message|your (?:instructions|prompt|rules|configuration|context|memory)"
    r"|environment variables?|env vars?|api[ _-]?keys?|credentials|private keys?"
    r"|conversation history|chat history|previous messages|secrets?)\b",
    rf"\b(?:reveal|leak|dump|exfiltrate|tell me){_W}{{0,30}}?\bpasswords?\b",
    r"\bsystem[ _-]?prompt\b",
    r"/etc/(?:passwd|shadow)",
    r"~/\.(?:ssh|aws|config|bash_history)",
    r"\bid_(?:rsa|ed25519)\b",
    r"(?:^|\s)\.env\b",
    # other languages
    r"\b(?:prompt (?:du )?système|prompt del sistema|prompt do sistema)\b",
    r"(?:系统提示|系统指令|システムプロンプト)",
    r"(?:системн\w* (?:промпт|подсказк\w*|инструкци\w*))",
    r"\b(?:révèle|montre|affiche)[\w\s,'’\-]{0,30}?\binstructions\b",
    r"\b(?:zeige|verrate|gib)[\w\s,'’\-]{0,30}?\b(?:anweisungen|systemanweisung\w*)\b",
)

_TOOL_USE = _rx(
    rf"\b(?:call|invoke|use|run|trigger|execute|launch)\b{_W}{{0,20}}?\btools?\b",
    r"\b(?:tool|function)_calls?\b",
    r"\buse_tool\b",
    rf"\bsend\b{_W}{{0,50}}?\bto\b",
    r"\bfetch(?:es|ed|ing)?\b",
    r"\be-?mail(?:s|ed|ing)?\b",
    r"[\w.+-]+@[\w-]+\.[a-z]{2,}",
    r"\b(?:upload|download)(?:s|ed|ing)?\b",
    r"\bwebhooks?\b",
    r"\bhttp (?:get|post|put) request\b",
    r"\b(?:post|submit) (?:it|this|them|the \w+) to\b",
    r"\b(?:visit|browse to|navigate to|open) (?:the |this |that )?(?:site|page|website|link|url)\b",
    r"\bclick (?:the|this|that|on) (?:link|button)\b",
)

_SECRET = _rx(
    r"\bsk-(?:proj-|ant-|live-|test-)?[a-z0-9_-]{16,}",
    r"\b(?:akia|asia)[0-9a-z]{16}\b",
    r"-----begin [a-z ]*private key-----",
    r"\bgh[pousr]_[a-z0-9]{30,}",
    r"\bgithub_pat_[a-z0-9_]{20,}",
    r"\bxox[abposr]-[a-z0-9-]{10,}",
    r"\baiza[0-9a-z_-]{30,}",
    r"\beyj[a-z0-9_-]{10,}\.[a-z0-9_-]{10,}\.",
    r"\b(?:password|passwd|pwd|passphrase|api[ _-]?key|secret[ _-]?key|access[ _-]?key"
    r"|access[ _-]?token|auth[ _-]?token|client[ _-]?secret)\s*[:=]\s*\S{4,}",
    r"\bbearer\s+[a-z0-9._~+/-]{16,}",
    r"\baws_secret_access_key\b",
)

_SHELL = _rx(
    r"\b(?:curl|wget)\b",
    r"\brm\s+-[a-z]*[rf]",
    r"\b(?:pip3?|npm|pnpm|yarn|gem|cargo|apt(?:-get)?|brew|conda|choco)\s+(?:install|add|i)\b",
    r"\b(?:ba|z|da|k)?sh\s+-c\b",
    r"\bpowershell\b|\bpwsh\b|\bcmd(?:\.exe)?\s+/[ck]\b",
    r"\bsudo\b",
    r"\bchmod\s+[+0-7]",
    r"\|\s*(?:ba|z)?sh\b",
    r"\bnc\s+-[a-z]*[el]\b|\bnetcat\b|\bncat\b",
    r"\bmkfifo\b",
    r"/bin/(?:ba|z)?sh\b",
    r"\b(?:invoke-webrequest|invoke-expression|iex|start-process)\b",
    r"\bcrontab\b",
    r"\bssh\s+[\w.-]+@",
    r"\bscp\s",
    r"\bbase64\s+(?:-d|--decode)\b",
    r"\beval\s+\$\(",
    r"\$\(\s*[a-z_][\w.-]*\s+[-\w/~.]",
)

_CODE_EXEC = _rx(
    r"\bimport\s+(?:os|sys|subprocess|socket|shutil|requests|urllib\w*|pty|ctypes)\b",
    r"\bfrom\s+(?:os|subprocess|socket|shutil|requests|urllib\w*)\s+import\b",
    r"\bos\.(?:system|popen|remove|unlink|environ|exec\w*|spawn\w*)\b",
    r"\bsubprocess\b",
    r"\b(?:eval|exec|compile|execfile)\s*\(",
    r"__import__|__builtins__|__globals__|__subclasses__",
    r"<script\b",
    r"\bjavascript:",
    r"<iframe\b",
    r"\bon(?:error|load)\s*=",
    r"\brequests\.(?:get|post|put)\b",
    r"\bsocket\.socket\b",
    r"\bshutil\.rmtree\b",
    r"\bopen\s*\(\s*['\"](?:/|~)",
    r"\bdocument\.cookie\b",
    r"\bfetch\s*\(",
)

_IMAGE_BEACON = _rx(
    r"!\[[^\]]{0,200}\]\s*[\(\[]",
    r"<img\b",
    r"<svg\b[^>]*\bonload",
)

_TLDS = (
    "com|net|org|io|ru|cn|xyz|ai|dev|app|info|biz|tk|top|site|online|gov|edu|uk|fr|nl|ly"
    "|gg|su|pw|link|click|onion|zip|mov|cloud|store|shop|live|pro|us|ca|au|in|jp|kr|br"
)
_URL = _rx(
    r"\b[a-z][a-z0-9+.-]{1,15}://",
    r"\bh(?:xx|tt)ps?\b",
    r"\bwww\.",
    rf"\b(?:[a-z0-9-]+\.)+(?:{_TLDS})\b(?:/|\s|$|[,;:)\]])",
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
    r"\[\.\]|\(\.\)|\[dot\]|\(dot\)",
    r"\bdata:[a-z]+/[a-z0-9.+-]+;base64",
)

_ENCODED_FOLDED = _rx(
    r"(?<![0-9a-z])[0-9a-f]{32,}(?![0-9a-z])",
    r"(?:\\x[0-9a-f]{2}){3,}",
    r"(?:\\u[0-9a-f]{4}){2,}",
    r"(?:%[0-9a-f]{2}){3,}",
    r"(?:&#x?[0-9a-f]+;){2,}",
    r"\b(?:decode|decoded|decoding|deobfuscate)\b[\w\s,'’\-]{0,30}?\b(?:base64|base-64|rot13|rot-13|hex)\b",
    r"\b(?:base64|rot13)\b[\w\s,'’\-]{0,30}?\b(?:decode|decoded|decoding)\b",
)
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")

Rule = Callable[[str], bool]


def _base64_blob(text: str) -> bool:
    """A token of 24+ base64 characters that mixes upper and lower case and carries a digit,
    '+', '/' or padding: no English word or honest identifier looks like that."""
    for match in _BASE64_TOKEN.finditer(text):
        token = match.group()
        if not (any(c.isupper() for c in token) and any(c.islower() for c in token)):
            continue
        if any(c.isdigit() or c in "+/=" for c in token):
            return True
    return False


def _homoglyph(text: str) -> bool:
    """A word mixing Latin letters with a Cyrillic or Greek letter that imitates one."""
    for word in re.findall(r"\w+", text):
        if any(ch in _CONFUSABLE_CHARS for ch in word) and any("a" <= ch <= "z" for ch in word):
            return True
    return False


# Phrases that survive letter-spacing ("i g n o r e"), read on the letters alone.
_SQUASHED = (
    (
        re.compile(
            r"(?:ignore|disregard|forget)(?:all|the|any|your)*(?:previous|prior|above|earlier)?instructions"
        ),
        "override",
    ),
    (re.compile(r"systemprompt"), "exfiltration"),
    (re.compile(r"imstart|imend|endoftext"), "chat_token"),
    (re.compile(r"youarenow"), "role_play"),
)

_PHRASE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("chat_token", _CHAT_TOKEN),
    ("override", _OVERRIDE),
    ("role_play", _ROLE_PLAY),
    ("exfiltration", _EXFILTRATION),
    ("tool_use", _TOOL_USE),
)
_PLAIN_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("secret", _SECRET),
    ("shell", _SHELL),
    ("code_exec", _CODE_EXEC),
    ("image_beacon", _IMAGE_BEACON),
    ("url", _URL),
    ("encoded", _ENCODED_FOLDED),
)
_ALL = frozenset(POISON_REASONS)
_TASK_TEXT = frozenset({"hidden_chars", "chat_token", "override"})
_SHORT_FIELDS = _ALL - {"encoded"}


def text_reasons(text: str, only: frozenset[str] = _ALL) -> tuple[str, ...]:
    """Every reason (of `only`) the text is refused for, in priority order; () = clean."""
    found: set[str] = set()
    if any(_invisible(ch) for ch in text) and "hidden_chars" in only:
        found.add("hidden_chars")
    nfkc = unicodedata.normalize("NFKC", text)
    nfkc = "".join(ch for ch in nfkc if not _invisible(ch))
    norm = " ".join(nfkc.casefold().split())
    skel = skeleton(norm)
    leet = skel.translate(_LEET)
    for reason, pattern in _PHRASE_RULES:
        if reason in only and any(pattern.search(v) for v in (norm, skel, leet)):
            found.add(reason)
    for reason, pattern in _PLAIN_RULES:
        if reason in only and any(pattern.search(v) for v in (norm, skel)):
            found.add(reason)
    if "encoded" in only and _base64_blob(nfkc):
        found.add("encoded")
    if "homoglyph" in only and _homoglyph(norm):
        found.add("homoglyph")
    letters = re.sub(r"[\W\d_]+", "", leet)
    for pattern, reason in _SQUASHED:
        if reason in only and pattern.search(letters):
            found.add(reason)
    return tuple(sorted(found, key=_PRIORITY.__getitem__))


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class PoisonVerdict:
    """What the screen said about one constraint or record: `reasons` in priority order
    (empty: clean), `where` the first refused part (e.g. "constraint 2 enforce")."""

    reasons: tuple[str, ...] = ()
    where: str = ""
    excerpt: str = ""

    @property
    def refused(self) -> bool:
        """Whether anything matched."""
        return bool(self.reasons)

    @property
    def reason(self) -> str | None:
        """The first reason in priority order, or None when clean."""
        return self.reasons[0] if self.reasons else None


def _first(parts: Iterable[tuple[str, str, frozenset[str]]]) -> PoisonVerdict:
    for where, text, only in parts:
        reasons = text_reasons(text, only)
        if reasons:
            return PoisonVerdict(reasons, where, text[:120])
    return PoisonVerdict()


def _constraint_parts(c: Constraint, prefix: str) -> list[tuple[str, str, frozenset[str]]]:
    # The served sentence last: it catches a phrase split across parts.
    return [
        (f"{prefix}when", c.when, _ALL),
        (f"{prefix}enforce", c.enforce, _ALL),
        (f"{prefix}avoid", c.avoid, _ALL),
        (f"{prefix}sentence", c.text(), _ALL),
    ]


def screen_constraint(c: Constraint) -> PoisonVerdict:
    """The verdict on one constraint (each part, then the sentence served)."""
    return _first(_constraint_parts(c, ""))


def screen_parts(when: str, enforce: str, avoid: str) -> PoisonVerdict:
    """The verdict on a constraint given as its three parts (a distiller's candidate)."""
    sentence = f"When {when}, enforce {enforce}; avoid {avoid}."
    return _first(
        [
            ("when", when, _ALL),
            ("enforce", enforce, _ALL),
            ("avoid", avoid, _ALL),
            ("sentence", sentence, _ALL),
        ]
    )


def screen_record(record: MemoryRecord) -> PoisonVerdict:
    """The verdict on a whole record: its constraints, its short fields, its task text."""
    parts: list[tuple[str, str, frozenset[str]]] = []
    for i, c in enumerate(record.constraints, start=1):
        parts.extend(_constraint_parts(c, f"constraint {i} "))
    for name in ("namespace", "category", "subcategory", "source_task_id", "distiller"):
        parts.append((name, str(getattr(record, name)), _SHORT_FIELDS))
    for name in ("model_pos", "model_neg"):
        value = getattr(record, name)
        if value:
            parts.append((name, value, _SHORT_FIELDS))
    parts.append(("task_text", record.task_text, _TASK_TEXT))
    return _first(parts)


@dataclass
class PoisonCounts:
    """Counters of a screen: records checked, refused, and refusals per reason."""

    checked: int = 0
    refused: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: PoisonVerdict) -> None:
        """Count one verdict."""
        self.checked += 1
        if verdict.reason is not None:
            self.refused += 1
            self.reasons[verdict.reason] += 1

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-native values."""
        return {
            "checked": self.checked,
            "refused": self.refused,
            "reasons": dict(sorted(self.reasons.items())),
        }


def refusal(
    record: MemoryRecord, verdict: PoisonVerdict, source: str = "", more: str = ""
) -> PoisonError:
    """The one error for a refused record, naming the record, the part and the reason
    (`more` is appended to the problem: how many others were refused)."""
    where = f"{source}: " if source else ""
    return PoisonError(
        f"{where}record {record.id!r} refused by the content screen: {verdict.reason} in "
        f"{verdict.where} ({verdict.excerpt!r}){more}",
        "constraints carry reasoning, never instructions, links, commands or secrets; "
        "fix or drop the record; the rules are in memcollab/memory/poison.py",
    )


def first_refused(
    records: Sequence[MemoryRecord], counts: PoisonCounts | None = None
) -> tuple[int, MemoryRecord, PoisonVerdict, int] | None:
    """Screen every record (counting each in `counts`); the first refused one as
    (position, record, verdict, how many were refused in all), or None."""
    first: tuple[int, MemoryRecord, PoisonVerdict] | None = None
    refused = 0
    for i, record in enumerate(records):
        verdict = screen_record(record)
        if counts is not None:
            counts.add(verdict)
        if verdict.refused:
            refused += 1
            if first is None:
                first = (i, record, verdict)
    return None if first is None else (*first, refused)
