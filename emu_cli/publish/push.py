"""``emu push``: a checkpoint or a curated set to the Hugging Face Hub in one commit.

The repository is created if needed, then every file (the folder, its card as ``README.md``,
a sample grid) goes up in a single commit, so the Hub never shows half a checkpoint. The token
comes from ``HF_TOKEN`` or the huggingface_hub login, the endpoint from ``HF_ENDPOINT`` (a
private mirror works). Only after the commit is the push recorded in the checkpoint's
``emu.json`` (``pushes``): nothing half-written is claimed as done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu_cli.data.export import MARKER
from emu_cli.files import write_atomic
from emu_cli.publish.card import SAMPLES, clip_card, dataset_card, model_card

RETRIES = 3
# Seconds a Hub request may wait on the network before it counts as failed (and is retried):
# huggingface_hub's own client waits forever, so a Hub that accepts and never answers would
# hang the push. `emu push --timeout` sets it.
HUB_TIMEOUT = 60.0
log = logging.getLogger("emu")


class PushError(ValueError):
    """A push failed; the message says why and what to do."""


@dataclass
class Upload:
    repo: str
    repo_type: str
    folder: Path
    card: Any
    files: list[str] = field(default_factory=list)
    extras: dict[str, Path] = field(default_factory=dict)  # from outside the folder, by repo name
    record: Path | None = None  # the folder's JSON record, where a push that landed is noted

    def describe(self) -> str:
        names = ["README.md", *self.extras, *self.files]
        lines = [f"{self.repo_type} repo {self.repo}: {len(names)} files"]
        lines += [f"  {name}" for name in names]
        return "\n".join(lines) + "\n\n" + str(self.card)


def _latest_samples(checkpoint: Path) -> Path | None:
    """The newest sample grid the run made: quality-tuning's validation images, or the last
    stage's previews."""
    candidates = sorted((checkpoint / "stages").glob("*/validation/step-*.png")) or sorted(
        (checkpoint / "stages").glob("*/previews/step-*.png")
    )
    return candidates[-1] if candidates else None


def _listed(folder: Path, skip_training_state: bool) -> list[str]:
    """Files to upload, relative to ``folder``. A run folder's ``stages/`` (logs, resumable
    state) stays home: the Hub gets the model, its card and its provenance."""
    names = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        # the half-written and emu's own bookkeeping stay home
        if not path.is_file() or ".incoming" in str(relative) or relative.name == MARKER:
            continue
        if skip_training_state and relative.parts[0] == "stages":
            continue
        names.append(str(relative))
    return sorted(names)


def plan_checkpoint(
    checkpoint: Path,
    repo: str,
    *,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    evaluation: Path | None = None,
) -> Upload:
    from emu_cli.checkpoint.folder import read_provenance
    from emu_cli.files import refuse_pickles

    checkpoint = Path(checkpoint)
    read_provenance(checkpoint)  # a clear error for a folder that is not a checkpoint
    refuse_pickles(checkpoint)
    results = None
    if evaluation is not None:
        path = Path(evaluation) / "results.json" if Path(evaluation).is_dir() else Path(evaluation)
        if not path.is_file():
            raise PushError(f"evaluation '{evaluation}' has no results.json (run emu evaluate)")
        results = json.loads(path.read_text())
    samples = _latest_samples(checkpoint)
    card = model_card(
        checkpoint, repo, base_model=base_model, datasets=datasets, evaluation=results,
        has_samples=samples is not None,
    )  # fmt: skip
    extras = {SAMPLES: samples} if samples else {}
    files = _listed(checkpoint, True)
    return Upload(repo, "model", checkpoint, card, files, extras, checkpoint / "emu.json")


def plan_clip(folder: Path, repo: str, aesthetic: Path | None = None) -> Upload:
    """A CLIP folder from ``emu filter train-clip``: open_clip's Hub layout, so the repo loads
    with ``hf-hub:OWNER/NAME`` in open_clip and in ``emu filter --clip-model``; with an
    aesthetic head for it, as ``aesthetic.safetensors`` and its record."""
    from emu_cli.curate.aesthetic import HUB_HEAD, AestheticHead, record_path
    from emu_cli.curate.clip import RECORD_FILE, ClipEncoder
    from emu_cli.files import refuse_pickles

    folder = Path(folder)
    refuse_pickles(folder)
    extras = {}
    if aesthetic is not None:  # only a head that reads this very model goes up with it
        AestheticHead.load(aesthetic).check_reads(ClipEncoder.load(str(folder)), aesthetic)
        extras = {HUB_HEAD: Path(aesthetic), record_path(HUB_HEAD).name: record_path(aesthetic)}
    card = clip_card(folder, repo, with_head=aesthetic is not None)
    files = _listed(folder, False)
    return Upload(repo, "model", folder, card, files, extras, folder / RECORD_FILE)


def plan_model(
    folder: Path, repo: str, *, aesthetic: Path | None = None, **card_options: Any
) -> Upload:
    """An emu checkpoint, or a CLIP folder from ``emu filter train-clip``, by what it holds."""
    from emu_cli.curate.clip import RECORD_FILE

    if (Path(folder) / RECORD_FILE).is_file():
        if any(card_options.values()):
            raise PushError(
                f"'{folder}' is a CLIP folder: --base-model, --card-dataset and --evaluation "
                "describe checkpoints only"
            )
        return plan_clip(folder, repo, aesthetic)
    if aesthetic is not None:
        raise PushError(f"--aesthetic goes with a CLIP folder, and '{folder}' is not one")
    if (Path(folder) / "metadata.jsonl").is_file():
        raise PushError(f"'{folder}' is an image folder: push it with --dataset (a dataset repo)")
    return plan_checkpoint(folder, repo, **card_options)


def plan_dataset(folder: Path, repo: str) -> Upload:
    folder = Path(folder)
    if not (folder / "metadata.jsonl").is_file():
        raise PushError(f"'{folder}' is not an image folder: it has no metadata.jsonl")
    return Upload(repo, "dataset", folder, dataset_card(folder, repo), _listed(folder, False))


def network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of the HTTP stack huggingface_hub uses (it has changed over versions)."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError")):  # fmt: skip
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def check_can_push(repo: str) -> None:
    """What a push needs before it reaches the Hub: a valid repo id, the Hub not switched off,
    a token. ``--push-to-hub`` checks it before training, not after."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        raise PushError(f"'{repo}' is not a Hub repo id (OWNER/NAME): {error}") from error
    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: unset it to push (nothing was pushed)")
    if get_token() is None:
        raise PushError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token); "
            "nothing was pushed"
        )


def push(
    upload: Upload,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    timeout: float = HUB_TIMEOUT,
) -> str:
    """Create the repo if needed and upload everything in one commit; returns the commit URL.
    Every request waits at most ``timeout`` seconds on the network; a failed one is retried."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_session
    from huggingface_hub.errors import HfHubHTTPError

    check_can_push(upload.repo)
    get_session().timeout = timeout  # the client every huggingface_hub call shares
    api = HfApi()
    operations = [
        CommitOperationAdd("README.md", str(upload.card).encode("utf-8")),
        *(CommitOperationAdd(name, str(path)) for name, path in upload.extras.items()),
        *(CommitOperationAdd(name, str(upload.folder / name)) for name in upload.files),
    ]
    message = commit_message or f"Upload {upload.repo_type} with emu"
    size = sum((upload.folder / name).stat().st_size for name in upload.files) + sum(
        path.stat().st_size for path in upload.extras.values()
    )
    for attempt in range(1, RETRIES + 1):
        log.info(
            f"pushing {len(operations)} files ({size / 1e6:.1f} MB) to {upload.repo_type} repo "
            f"{upload.repo} at {api.endpoint} (attempt {attempt} of {RETRIES})"
        )
        try:
            api.create_repo(upload.repo, repo_type=upload.repo_type, private=private, exist_ok=True)
            if revision:
                api.create_branch(
                    upload.repo, branch=revision, repo_type=upload.repo_type, exist_ok=True
                )
            commit = api.create_commit(
                upload.repo,
                operations,
                commit_message=message,
                repo_type=upload.repo_type,
                revision=revision,
            )
            break
        except HfHubHTTPError as error:
            raise PushError(_explain(error, upload)) from error
        except network_errors() as error:  # connection refused, reset, timed out
            why = (
                f"it did not answer within {timeout:g} s"
                if "Timeout" in type(error).__name__
                else str(error)
            )
            if attempt == RETRIES:
                raise PushError(
                    f"could not reach the Hub at {api.endpoint} after {RETRIES} attempts: "
                    f"{why}. Check the network or HF_ENDPOINT (a slow link may need a longer "
                    "--timeout); nothing was recorded as pushed"
                ) from error
            log.info(f"the Hub at {api.endpoint} failed ({why}); retrying")
            time.sleep(min(2**attempt, timeout))  # no longer between tries than one may take
    url = str(commit.commit_url)
    if upload.record is not None:
        _record(upload.record, upload.repo, revision, url)
    return url


def _explain(error: Any, upload: Upload) -> str:
    status = error.response.status_code if error.response is not None else None
    where = f"{upload.repo_type} repo '{upload.repo}'"
    if status == 401:
        return (
            f"the Hub refused the token for {where} (401): set HF_TOKEN or run `hf auth "
            "login`; nothing was pushed"
        )
    if status == 403:
        return (
            f"the token may not write to {where} (403): use a token with write access to that "
            "namespace; nothing was pushed"
        )
    if status == 409:
        return f"{where} conflicts with an existing repository (409): {error}"
    return f"pushing {where} failed ({status}): {error}"


def _record(record_file: Path, repo: str, revision: str | None, url: str) -> None:
    record = json.loads(record_file.read_text())
    pushes = [*record.get("pushes", []), {"repo": repo, "revision": revision, "commit": url}]
    write_atomic(record_file, json.dumps({**record, "pushes": pushes}, indent=2))
