"""Final-answer extraction and equivalence checking for math benchmarks (GSM8K, MATH).

Extraction is ours (the last ``\\boxed{}``, GSM8K's ``#### N``, "The answer is N"); the
comparison is math-verify's (``parse`` + ``verify``): numbers, fractions, LaTeX expressions,
intervals, tuples, sets, matrices, equations. Before handing an answer to math-verify we strip
what a grader ignores: dollar signs, ``\\text{...}`` / plain-word units, thousands separators,
trailing periods; a degree sign becomes ``^\\circ``.

Time limits. sympy can take unbounded time on pathological answers, so every check runs under
a deadline (`DEFAULT_TIMEOUT_S` of CPU time; reason "timeout" when it passes, logged as a
warning). A verdict must not depend on how busy the machine is, so the budget is CPU time,
not wall time; answers equal to the reference after normalisation match without math-verify;
and math-verify's one-time start-up (its first parse builds the LaTeX grammar, seconds on a
loaded machine) runs once, outside any deadline:

* In the main thread it is a ``SIGVTALRM`` timer of ours, which checks the main thread's
  own CPU time. math-verify's own signal timeouts are switched off because they cancel any
  outer timer; ours saves and restores any earlier one, and wall-clock timers
  (pytest-timeout's SIGALRM) are not touched. CPython checks for signals inside long
  big-integer loops, so even a huge ``pow`` is interrupted.
* Signals only work in the main thread, so from any other thread the check runs in a daemon
  watchdog thread, whose own CPU clock the caller reads, and the caller stops waiting at the
  deadline (or, if the check is starved of CPU, after `_WALL_CAP_FACTOR` times it in wall
  time). The abandoned computation cannot be killed and runs on in the background; and a
  C-level big-integer operation holds the GIL, so it would block the waiting caller too.
  Answers that would make sympy build an astronomically large integer (``10^{10^{10}}``,
  ``1000000!``) are therefore refused before the comparison, in every thread.

math-verify's "Timeout ..." log warnings raised during our checks are filtered out (its timers
are off on purpose, and a timeout shows in the verdict); the module itself never prints.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from math_verify import LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from sympy import Basic, MatrixBase, Pow, Rational, binomial, factorial

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MathVerdict",
    "Style",
    "check_math",
    "extract_answer",
    "last_boxed",
    "reference_answer_gsm8k",
    "reference_answer_math",
]

Style = Literal["math", "gsm8k"]
Reason = Literal["match", "mismatch", "no_answer", "unparsable", "timeout"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
"""CPU seconds one `check_math` call may spend in math-verify (both parses and the comparison)."""

_T = TypeVar("_T")


_checking = threading.local()
"""`_checking.active` is True in a thread while it runs math-verify for `check_math`."""


class _OwnTimeoutWarnings(logging.Filter):
    """Drops math-verify's timeout warnings ("Timeout is disabled...", "Timeout during...")
    emitted during our checks: we switch its timers off, run our own deadline and report a
    timeout in the verdict. Its warnings from other callers pass through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            getattr(_checking, "active", False) and record.getMessage().startswith("Timeout ")
        )


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_OwnTimeoutWarnings())

# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_BOX_TOKEN_RE = re.compile(r"[^\s${}]+")

# A GSM8K-style number: optional sign and currency, digits with optional thousands separators,
# optional decimals, optional percent sign.
_NUM = (
    r"[-\u2212]?\s*(?:\\?\$\s*)?[-\u2212]?"
    r"(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?<=\d)"
    r"(?:\s*(?:\\?%|percent\b))?"
)
_GSM8K_PATTERNS = (
    re.compile(r"####\s*(?P<ans>" + _NUM + ")"),
    re.compile(
        r"\banswer\b(?:\s+is\s*:?|\s*:)\s*(?:\*\*|\\\(|\$(?=\s*[-\u2212]?\s*\\?\$?\s*[\d.]))?\s*"
        r"(?P<ans>" + _NUM + ")",
        re.IGNORECASE,
    ),
)


def _brace_content(text: str, open_idx: int) -> str | None:
    """The text inside the brace group opening at `open_idx`, or None if it never closes."""
    depth = 0
    i = open_idx
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in `text`.

    Braces are matched with nesting (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); escaped
    braces ``\\{ \\}`` do not count. The brace-less form ``\\boxed 5`` gives the token after
    the space. Returns None when there is no box or the last one is unbalanced or empty-headed.
    """
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    end = matches[-1].end()
    rest = text[end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        return _brace_content(text, end + len(rest) - len(stripped))
    if stripped and len(stripped) < len(rest):
        token = _BARE_BOX_TOKEN_RE.match(stripped)
        return token.group(0) if token else None
    return None


def extract_answer(text: str, style: Style = "math") -> str | None:
    """The final answer a model gave in `text`, as a string, or None when there is none.

    Both styles take the content of the last ``\\boxed{}`` when there is one. With
    ``style="gsm8k"`` and no box, the last of ``#### N``, "The answer is N" and "answer: N"
    (by position in the text) is used; N is a number with optional sign, currency, thousands
    separators and percent sign. ``style="math"`` accepts only boxed answers.
    """
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    if style == "math":
        return None
    best: re.Match[str] | None = None
    for pattern in _GSM8K_PATTERNS:
        for match in pattern.finditer(text):
            if best is None or match.start() > best.start():
                best = match
    return best.group("ans").strip() if best is not None else None


def reference_answer_gsm8k(answer_field: str) -> str:
    """The reference answer of a GSM8K ``answer`` field: what follows ``####``, without commas."""
    _, sep, tail = answer_field.rpartition("####")
    if not sep:
        raise ValueError("GSM8K answer field has no '####' line")
    return tail.strip().replace(",", "")


def reference_answer_math(solution: str) -> str:
    """The reference answer of a MATH solution: its last ``\\boxed{}``; ValueError if none."""
    boxed = last_boxed(solution)
    if boxed is None or not boxed.strip():
        raise ValueError("MATH solution has no balanced \\boxed{...} answer")
    return boxed.strip()


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_TRAILING_PERIOD_RE = re.compile(r"(?<![.\\])\.(?=\s*$)|(?<=[A-Za-z])\.(?=\s*\}\s*$)")
_DEGREE_RE = re.compile(r"\s*(?:\u00b0|\\degree\b)")
_SPACING_RE = re.compile(r"\\[!,;: ]|~")
_PLAIN_NUMBER_RE = re.compile(
    r"(?P<sign>[-\u2212]?)\s*(?:\\?\$\s*)?(?P<sign2>[-\u2212]?)\s*"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)\s*"
    r"(?P<pct>\\?%|percent)?\s*"
    r"(?P<unit>[A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)?"
)
_NOT_UNITS = frozenset({"pi", "sqrt", "and", "or", "cdot", "times", "infty"})


def _plain_number(answer: str, *, keep_percent: bool) -> str | None:
    """`answer` reduced to a plain number when it is only a decorated number, else None.

    Decorations: a currency sign, thousands separators, LaTeX spacing, a percent sign
    (dropped unless `keep_percent`, then written as ``\\%``) and trailing unit words.
    """
    text = _TEXT_WRAPPER_RE.sub(r" \1 ", answer)
    text = _SPACING_RE.sub("", text).replace("$", "").strip()
    match = _PLAIN_NUMBER_RE.fullmatch(text)
    if match is None:
        return None
    unit = match.group("unit")
    if unit and any(word.lower() in _NOT_UNITS for word in unit.split()):
        return None
    negative = bool(match.group("sign")) != bool(match.group("sign2"))
    number = ("-" if negative else "") + match.group("num").replace(",", "")
    if match.group("pct") and keep_percent:
        number += r"\%"
    return number


def _normalize(answer: str, style: Style) -> str:
    """`answer` with what a grader ignores stripped, ready for math-verify's LaTeX parser."""
    text = _TRAILING_PERIOD_RE.sub("", answer.strip()).strip()
    text = _DEGREE_RE.sub(r"^{\\circ}", text)
    number = _plain_number(text, keep_percent=style == "math")
    if number is not None:
        return number
    # A bare % starts a LaTeX comment; make it a percent sign.
    return re.sub(r"(?<!\\)%", r"\\%", text)


# ---------------------------------------------------------------------------------------------
# Deadline
# ---------------------------------------------------------------------------------------------


_WALL_CAP_FACTOR = 12
"""A starved check gives up after this many times its CPU budget in wall time."""


class _MainThreadDeadline:
    """A SIGVTALRM timer on the process's CPU time that raises TimeoutException in the main
    thread.

    The timer counts the whole process's CPU time and ticks every 0.1 s of it once `seconds`
    have passed; each tick raises only when the main thread itself has used `seconds` (other
    threads of the process, a model's, say, do not use up the check's budget), or when
    `_WALL_CAP_FACTOR` times `seconds` of wall time have passed. Repeated ticks also cover a
    library handler that swallows the first exception. Other processes on a busy machine do
    not make a check time out. Any such timer and handler set before are restored after;
    wall-clock timers (SIGALRM, pytest-timeout's) are left alone.

    A tick can land inside a finalizer (`__del__`, a weakref callback, the garbage
    collector) that the check set off; Python cannot raise there and hands the exception to
    `sys.unraisablehook`, which would print it or, under pytest, fail the test. While armed,
    our own hook drops that TimeoutException (the next tick times the check out) and passes
    anything else on to the hook it replaced, with ticks held off meanwhile.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False
        self.fired = False
        self._thread_started = time.thread_time()
        self._wall_started = time.monotonic()
        self._in_unraisable_hook = False
        self._previous_unraisable_hook: Callable[[Any], object] = sys.unraisablehook

    def _on_unraisable(self, unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, TimeoutException) and self.fired:
            return  # our tick, raised inside a finalizer: the check still times out
        self._in_unraisable_hook = True
        try:
            self._previous_unraisable_hook(unraisable)
        finally:
            self._in_unraisable_hook = False

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if not self.active or self._in_unraisable_hook:
            return
        if frame is not None and frame.f_code is _MainThreadDeadline._on_unraisable.__code__:
            return  # raising inside our own hook would itself be unraisable
        used = time.thread_time() - self._thread_started
        waited = time.monotonic() - self._wall_started
        if used >= self.seconds or waited >= self.seconds * _WALL_CAP_FACTOR:
            self.fired = True
            raise TimeoutException("math check timed out")

    @contextmanager
    def armed(self) -> Iterator[None]:
        previous_handler = signal.signal(signal.SIGVTALRM, self._on_alarm)
        self._previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable
        self.active = True
        outer_delay, outer_interval = signal.setitimer(signal.ITIMER_VIRTUAL, self.seconds, 0.1)
        started = time.process_time()
        try:
            try:
                yield
            finally:
                self.active = False  # from here on a late alarm is a no-op
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
            sys.unraisablehook = self._previous_unraisable_hook
            signal.signal(
                signal.SIGVTALRM,
                previous_handler if previous_handler is not None else signal.SIG_DFL,
            )
            if outer_delay > 0:
                remaining = outer_delay - (time.process_time() - started)
                signal.setitimer(signal.ITIMER_VIRTUAL, max(remaining, 1e-3), outer_interval)


def _own_cpu_clock() -> int | None:
    """The calling thread's CPU-time clock id, or None where the platform has none.

    Asked from inside the thread itself: `pthread_getcpuclockid` on another thread's id
    reads that thread's descriptor, which glibc may already have freed once the thread has
    ended (a fast check ends at once): that read crashed the process (SIGSEGV) when many
    checks ran in parallel."""
    get_clock = getattr(time, "pthread_getcpuclockid", None)
    if get_clock is None:
        return None
    try:
        return get_clock(threading.get_ident())
    except OSError:
        return None


def _run_with_deadline(func: Callable[[], _T], seconds: float) -> _T:
    """`func()`, or TimeoutException once it has used `seconds` of CPU time.

    Outside the main thread the check runs in a watchdog thread whose own CPU clock is read
    (Linux); where there is none, or if the check is starved of CPU for
    `_WALL_CAP_FACTOR` times its budget, wall time decides.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        deadline = _MainThreadDeadline(seconds)
        with deadline.armed():
            value = func()
        if deadline.fired:  # math-verify caught the timeout and carried on with a partial result
            raise TimeoutException("math check timed out")
        return value
    outcome: dict[str, Any] = {}
    clock_known = threading.Event()

    def target() -> None:
        try:
            outcome["clock"] = _own_cpu_clock()
        finally:
            clock_known.set()
        try:
            outcome["value"] = func()
        except Exception as exc:  # noqa: BLE001 - handed to the waiting thread and re-raised
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="memcollab-math-check", daemon=True)
    started = time.monotonic()
    worker.start()
    clock_known.wait()
    clock = outcome.get("clock")
    wall_limit = started + (seconds * _WALL_CAP_FACTOR if clock is not None else seconds)
    while worker.is_alive():
        worker.join(min(0.05, seconds))
        if not worker.is_alive():
            break
        used = 0.0
        if clock is not None:
            try:
                used = time.clock_gettime(clock)
            except OSError:  # the thread ended between the two checks
                break
            if not worker.is_alive():
                break  # ended meanwhile: its clock id may already name another thread
        if used >= seconds or time.monotonic() >= wall_limit:
            raise TimeoutException("math check timed out")
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        raise RuntimeError("math check thread ended without a result")
    return outcome["value"]


# ---------------------------------------------------------------------------------------------
# Size guard
# ---------------------------------------------------------------------------------------------

_MAX_BITS = 1 << 17
"""Largest integer (in bits, about 39,000 digits) we let sympy build while comparing."""


def _value_bound(expr: Basic) -> float:
    """An upper bound of ``|expr|`` for a numeric expression (inf when astronomically large)."""
    if isinstance(expr, Rational):
        try:
            return abs(float(expr))
        except OverflowError:
            return math.inf
    bits = _bits(expr)
    return math.inf if bits >= 1023 else 2.0**bits


def _bits(expr: Basic) -> float:
    """A rough upper bound of the size in bits of the integers sympy builds evaluating `expr`.

    sympy's ``doit`` turns ``10^{10^{10}}`` or ``1000000!`` into an exact integer with one
    C-level operation that no timer can interrupt outside the main thread; such answers are
    refused before they reach math-verify's comparison.
    """
    if isinstance(expr, Rational):
        return float(max(abs(expr.p).bit_length() - 1, expr.q.bit_length() - 1, 0))
    if not isinstance(expr, Basic) or not expr.args:
        return 0.0
    if isinstance(expr, Pow):
        base, exponent = expr.args
        return _bits(base) * _value_bound(exponent) + _bits(exponent)
    if isinstance(expr, factorial):
        n = _value_bound(expr.args[0])
        return n * math.log2(n) if n > 1 else 0.0
    if isinstance(expr, binomial):
        n, k = (_value_bound(arg) for arg in expr.args)
        return min(n, k) * math.log2(n) if n > 1 else 0.0
    return sum(_bits(arg) for arg in expr.args)


def _too_large(parsed: list[Any]) -> bool:
    """Whether any parsed answer would make sympy build an astronomically large integer."""
    try:
        for item in parsed:
            exprs = list(item) if isinstance(item, MatrixBase) else [item]
            if any(isinstance(e, Basic) and _bits(e) > _MAX_BITS for e in exprs):
                return True
    except RecursionError:
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------

_LATEX_BOXED = (LatexExtractionConfig(boxed_match_priority=0),)


@dataclass(frozen=True)
class MathVerdict:
    """The outcome of one check.

    `reason` is "match" (equivalent), "mismatch" (both parsed, not equivalent), "no_answer"
    (nothing extracted from the output), "unparsable" (math-verify could not turn the answer
    or the reference into an expression and the strings differ, or the answer is too large
    to compare) or "timeout" (the comparison ran past its deadline).
    """

    correct: bool
    extracted: str | None
    reference: str
    reason: Reason


def _parse_answer(answer: str) -> list[Any]:
    """math-verify's parse of one bare answer (sympy objects and/or a string fallback)."""
    return parse(
        "\\boxed{" + answer + "}",
        extraction_config=_LATEX_BOXED,
        fallback_mode="first_match",
        parsing_timeout=None,  # our own deadline guards it
    )


_warm_lock = threading.Lock()
_warm = False


def _warm_up() -> None:
    """Run math-verify once, outside any deadline, so its start-up is never timed."""
    global _warm
    if _warm:
        return
    with _warm_lock:
        if not _warm:
            with _checking_now():
                verify(_parse_answer("\\frac{1}{2}"), _parse_answer("0.5"), timeout_seconds=None)
            _warm = True


@contextmanager
def _checking_now() -> Iterator[None]:
    """Mark this thread as running math-verify for us (its timeout warnings are dropped)."""
    _checking.active = True
    try:
        yield
    finally:
        _checking.active = False


def _compare(extracted: str, reference: str, style: Style) -> Reason:
    with _checking_now():
        return _compare_unguarded(extracted, reference, style)


def _compare_unguarded(extracted: str, reference: str, style: Style) -> Reason:
    gold = _parse_answer(_normalize(reference, style))
    pred = _parse_answer(_normalize(extracted, style))
    if _too_large(gold) or _too_large(pred):
        return "unparsable"
    if gold and pred and verify(gold, pred, timeout_seconds=None):
        return "match"
    if any(not isinstance(g, str) for g in gold) and any(not isinstance(p, str) for p in pred):
        return "mismatch"
    return "unparsable"


def check_math(
    output: str,
    reference: str,
    style: Style = "math",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> MathVerdict:
    """Check a model `output` against a `reference` answer (a bare answer, not a solution).

    The answer is taken from `output` with `extract_answer`, normalised (currency, units,
    thousands separators, trailing period) and compared with math-verify. Safe to call from
    any thread; gives up after `timeout_s` seconds with reason "timeout".
    """
    extracted = extract_answer(output, style)
    if extracted is None:
        return MathVerdict(False, None, reference, "no_answer")
    normalized = _normalize(extracted, style)
    if normalized and normalized == _normalize(reference, style):
        return MathVerdict(True, extracted, reference, "match")
    _warm_up()
    try:
        reason = _run_with_deadline(lambda: _compare(extracted, reference, style), timeout_s)
    except TimeoutException:
        log.warning(
            "math check timed out after %.1f s: answer %r, reference %r",
            timeout_s,
            extracted[:80],
            reference[:80],
        )
        reason = "timeout"
    return MathVerdict(reason == "match", extracted, reference, reason)
