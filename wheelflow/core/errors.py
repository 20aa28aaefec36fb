"""Errors written for the person running the release.

Every message is one line that names what is wrong and how to fix it. ``transient`` tells the
retry policies whether trying again can help (network trouble) or cannot (bad input, a compile
error, a hash mismatch).
"""

from __future__ import annotations

import logging
from enum import IntEnum

from wheelflow.core.redaction import redact


class ExitCode(IntEnum):
    """Every exit code of the ``wheelflow`` command, in one place (docs/deployments-and-ci.md lists them)."""

    OK = 0  # done: released and verified, checks passed, run Completed
    FAILED = 1  # the release, a check or the run failed (the message names what and the fix)
    BAD_INPUT = 2  # bad input (spec, option, parameter): refused before anything was done
    CANCELLED = 3  # the run was Cancelled or Crashed
    TIMED_OUT = 4  # waiting for the run timed out; the run goes on
    RUNNING = 5  # status: the run has not finished yet (Scheduled, Pending, Running, Paused): ask again later
    NO_SERVER = 6  # no Prefect server could start or answer: nothing was done


EXIT_CODES: dict[int, str] = {
    ExitCode.OK: "done: released and verified, checks passed, run Completed",
    ExitCode.FAILED: "the release, a check or the run failed",
    ExitCode.BAD_INPUT: "bad input: nothing was done",
    ExitCode.CANCELLED: "the run was cancelled or crashed",
    ExitCode.TIMED_OUT: "waiting timed out; the run goes on",
    ExitCode.RUNNING: "the run has not finished yet: ask again later",
    ExitCode.NO_SERVER: "no Prefect server could start or answer: nothing was done",
}


class WheelflowError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user; ``exit_code`` is what
    the CLI exits with (1: the release or check failed; 2: bad input, nothing was done).

    The message is masked when the error is made and again when it is shown (a secret may be
    registered in between): an error can name a URL or quote an index, never a secret.
    """

    transient = False
    exit_code = ExitCode.FAILED

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact(super().__str__())


class SpecError(WheelflowError):
    """The release spec (or a command-line value) is invalid: names the key, the bad value and the fix."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, key: str, problem: str, fix: str | None = None) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        message = f"spec error: {key}: {problem}"
        if fix:
            message += f"; fix: {fix}"
        super().__init__(message)


class HomeError(WheelflowError):
    """$WHEELFLOW_HOME cannot be written (read-only, full, not a folder): refused before anything starts."""

    exit_code = ExitCode.BAD_INPUT


class VersionError(WheelflowError):
    """The release version cannot be determined, or its sources disagree."""


class BuildError(WheelflowError):
    """Building a distribution failed (deterministic: never retried)."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = redact(log_tail)
        super().__init__(message)


class CheckError(WheelflowError):
    """A built file failed validation before upload."""


class RuntimeInstallError(WheelflowError):
    """The runtime (e.g. a pinned torch) that the ABI check resolves symbols against could not be installed."""


class CredentialsError(WheelflowError):
    """A target's credentials are missing or malformed."""


class UsageError(SpecError):
    """A command-line argument is wrong (exit code 2, like a spec error)."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, option: str, problem: str, fix: str) -> None:
        self.key = option
        WheelflowError.__init__(self, f"usage error: {option}: {problem}; fix: {fix}")


class IndexReadError(WheelflowError):
    """An index could not be read (base for transient read failures)."""

    transient = True


class DeadlineExceeded(IndexReadError):
    """A read did not complete before its total deadline (a slow or dripping server)."""


class MalformedListingError(IndexReadError):
    """The index answered with a listing that is not valid PEP 691 JSON / PEP 503 HTML, is too large,
    or contradicts itself. Reading it again does not help: not transient."""

    transient = False


class IndexRedirectError(IndexReadError):
    """The index redirects in a loop, too often, or away from http(s): the same on every read, so
    never retried."""

    transient = False


class UploadError(WheelflowError):
    """An upload failed. ``transient`` says whether retrying may help."""

    def __init__(
        self, message: str, *, transient: bool, status: int | None = None, deadline_fix: str | None = None
    ) -> None:
        self.transient = transient
        self.status = status
        self.deadline_fix = deadline_fix  # the attempt ran out of its upload-timeout: what to change
        super().__init__(message)


class VerificationError(WheelflowError):
    """What the index serves is not what was released."""


class HashMismatchError(VerificationError):
    """The index serves a file under the expected name with other bytes."""


class PublishError(WheelflowError):
    """A built file was not published and verified everywhere it was routed."""


class StaticIndexError(WheelflowError):
    """A static (self-written PEP 503) index could not be written, merged or rolled back."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class RepairError(WheelflowError):
    """Repairing a built wheel (auditwheel or the spec's repair command) failed (deterministic)."""


def _log_user_errors_without_traceback() -> None:
    """A WheelflowError is written to be read alone: one line with the fix. Prefect's engines log each
    failed task and flow run with its traceback, which for these errors only buries that line (on
    the terminal, in the UI's logs). Their records keep the message and lose the traceback; any
    other exception (a bug) keeps it. Installed once per process, by importing this module."""
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], WheelflowError):
            record.exc_info, record.exc_text = None, None
        return record

    logging.setLogRecordFactory(factory)


_log_user_errors_without_traceback()


def strip_fix(message: str) -> str:
    """A one-line error without its ``; fix: ...`` part."""
    return message.split("; fix: ", 1)[0]


class RetriesExhausted(WheelflowError):
    """A step that failed the same transient way on every attempt: wheelflow stopped retrying. The
    message names the attempts, the last error and what a person does next."""

    def __init__(self, attempts: int, last_error: str, fix: str) -> None:
        self.attempts, self.last_error = attempts, last_error
        super().__init__(f"gave up after {attempts} attempts: {' '.join(strip_fix(last_error).split())}; fix: {fix}")


def retries_exhausted(exc: BaseException, attempts: int) -> RetriesExhausted:
    """What a retried step says when its last attempt failed the way the earlier ones did: the
    attempts, the last error without its retry advice, and what a person does now."""
    text = str(exc) if isinstance(exc, WheelflowError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UploadError) and exc.deadline_fix:
        fix = exc.deadline_fix
    elif isinstance(exc, UploadError):
        fix = (
            "the index kept failing: check that it is up and accepts uploads, then re-run the release "
            "(files already served are found and not uploaded again)"
        )
    elif isinstance(exc, IndexReadError):
        fix = "check that the index answers at that URL (open it in a browser or with curl), then re-run"
    elif isinstance(exc, InfrastructureError):
        # the runner's own fix (start dockerd, build the images) says more than a generic one
        fix = (
            text.split("; fix: ", 1)[1]
            if "; fix: " in text
            else ("check the runner (Docker daemon, disk, images: `wheelflow doctor`), then re-run")
        )
    else:
        fix = "the failure persisted through every retry: check the service it names is reachable, then re-run"
    return RetriesExhausted(attempts, text, fix)


class InfrastructureError(WheelflowError):
    """The runner, not the code: daemon unreachable, image missing. Retried."""

    transient = True


class CellUnbuildable(WheelflowError):
    """This builder cannot build this cell on this runner (e.g. no such interpreter)."""


class ReleaseStepFailed(WheelflowError):
    """A release stopped at one step: the run's final state message names the step and its error
    (`status`, `trigger`, the alert; the Prefect UI on hover); the step's own error is ``__cause__``."""

    def __init__(self, step: str, error: WheelflowError) -> None:
        self.step, self.error = step, error
        self.exit_code = error.exit_code
        super().__init__(f"{step} failed: {error}")


class ReleaseBusy(WheelflowError):
    """Another run of the same release still holds it after the wait."""


class OrchestrationError(WheelflowError):
    transient = False


class ServerUnavailable(WheelflowError):
    """No Prefect server could start or answer (port taken, disk full, read-only home, a crash, a
    server that stays away): one line with why and the fix, exit code 6, nothing was done."""

    transient = True
    exit_code = ExitCode.NO_SERVER

    def __init__(self, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}; fix: {fix}")


class ArtifactStoreError(WheelflowError):
    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient  # a store that did not answer may answer on the next attempt


class SourceError(WheelflowError):
    """The source to release cannot be taken as asked (a commit that is not there, a file git cannot export)."""


class DirtySourceError(SourceError):
    """The working tree's tracked files differ from the commit being released."""


class GitError(WheelflowError):
    transient = True  # a remote that does not answer may answer later


class SourceExportError(WheelflowError):
    """The tag's files cannot be exported (the tag or the project's folder is not in the repository)."""


class ApprovalError(WheelflowError):
    """Rejected, or nobody decided in time: the release stops before the gated target."""


class EnvCreationError(WheelflowError):
    """The environment could not be created (an interpreter that does not run, a full disk)."""


class MonitorFoundProblems(WheelflowError):
    transient = False


class NothingToMonitor(WheelflowError):
    """A monitor that checks nothing must not end green: say what to configure."""


class NothingToCheck(WheelflowError):
    """No axis to watch: say what to configure instead of ending green."""


class BackfillFailed(WheelflowError):
    """Some cells could not be built, checked or published: each is named with its reason."""


class NothingToBackfill(WheelflowError):
    """No released version matched: nothing was checked, so the run must not end green."""


class ReleaseAssetError(WheelflowError):
    """A GitHub release or one of its assets could not be read, written, deleted or proven.
    ``transient`` says whether retrying may help (a 5xx may; a refused token or a full asset may not)."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        self.transient = transient
        self.status = status
        super().__init__(message)


class RateLimited(ReleaseAssetError):
    """GitHub's rate limit (primary or secondary) asks for a longer wait than the deadline leaves."""
