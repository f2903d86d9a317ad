"""Reading from the Hugging Face Hub: what names a Hub repo, and downloads that fail with a
message saying what to do. Downloads go through huggingface_hub's own cache, token
(``HF_TOKEN`` or the login), endpoint (``HF_ENDPOINT``) and offline switch
(``HF_HUB_OFFLINE``: the cache only). Pushing is :mod:`emu_cli.publish.push`."""

from __future__ import annotations

from pathlib import Path

HUB = "hf-hub:"  # open_clip's prefix for a Hub repo; emu accepts it wherever a repo may be named


class HubError(ValueError):
    """A Hub download failed; the message names the repo and what to do."""


def hub_repo(reference: str) -> tuple[str, str | None] | None:
    """``(repo id, revision or None)`` when ``reference`` reads as a Hub repo:
    ``hf-hub:OWNER/NAME[@REVISION]`` or ``OWNER/NAME[@REVISION]``; None otherwise (a path).
    Whether a local folder of that name wins is the caller's choice."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    explicit = reference.startswith(HUB)
    repo, _, revision = reference.removeprefix(HUB).partition("@")
    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        if explicit:
            raise HubError(f"'{reference}' does not name a Hub repo: {error}") from error
        return None
    if repo.count("/") != 1:
        if explicit:
            raise HubError(f"'{reference}' must be {HUB}OWNER/NAME[@REVISION]")
        return None
    return repo, revision or None


def explain(error: BaseException, what: str) -> str:
    """Why downloading ``what`` failed, and the way out, for the errors huggingface_hub raises."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    if isinstance(error, GatedRepoError):
        return f"{what} is gated on the Hub at {endpoint}: accept its terms and use a token"
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"the Hub at {endpoint} has no {what} (or it is private and the token cannot read "
            "it: set HF_TOKEN or run `hf auth login`)"
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{what}: the Hub at {endpoint} has no such revision (a branch, tag or commit)"
    if isinstance(error, RemoteEntryNotFoundError):
        return f"the Hub at {endpoint} has no {what}"
    if isinstance(error, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return (
                f"{what} is not in the Hub download cache and HF_HUB_OFFLINE is set: download "
                "it once with the Hub reachable, or unset HF_HUB_OFFLINE"
            )
        return (
            f"could not reach the Hub at {endpoint} for {what}, which is not in the download "
            "cache: check the network or HF_ENDPOINT"
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        return f"downloading {what} from {endpoint} failed ({status}): {error}"
    return f"downloading {what} from {endpoint} failed: {error}"


# What a diffusers folder loads from: configs and tokenizer files, and each component's weights
# in safetensors inside its folder. Left on the Hub: pickles (refused anyway), the half-precision
# and non-EMA variants (``NAME.fp16.safetensors``), and the single-file checkpoints at the root
# that Stable Diffusion repos carry beside the folders (gigabytes each).
PIPELINE_FILES = ["*.json", "*.txt", "*.model", "*/*.safetensors"]
VARIANTS = ["*.*.safetensors"]


def snapshot(repo: str, revision: str | None, kind: str) -> Path:
    """A Hub repo's folder at ``revision`` (default branch when None), downloaded into
    huggingface_hub's cache or found there: of a model repo, the diffusers pipeline
    (``PIPELINE_FILES``); of a dataset repo, every file. Its name is the commit it holds (the
    cache's ``snapshots/COMMIT`` layout), which makes a record of it exact."""
    from huggingface_hub import snapshot_download

    what = f"{kind} repo '{repo}'" + (f" at revision '{revision}'" if revision else "")
    only: dict[str, list[str]] = {}
    if kind == "model":
        only = {"allow_patterns": PIPELINE_FILES, "ignore_patterns": VARIANTS}
    try:
        return Path(snapshot_download(repo, repo_type=kind, revision=revision, **only))
    except Exception as error:  # huggingface_hub raises many types: offline, 404, network
        raise HubError(explain(error, what)) from error


def folder_or_repo(reference: str, kind: str, missing: str) -> tuple[Path, str | None]:
    """The folder ``reference`` names, and the Hub repo it came from (None for a folder here).
    A path here wins, as in diffusers' ``from_pretrained``; otherwise ``OWNER/NAME[@REVISION]``
    (or with ``hf-hub:``) is a Hub repo of ``kind``, fetched by :func:`snapshot`. A reference
    that names no repo comes back as a path, for the caller to say what is wrong with it.
    ``missing`` opens the message when a bare name is neither here nor on the Hub, e.g.
    "no checkpoint folder 'me/x' here"."""
    explicit = reference.startswith(HUB)
    if not explicit and Path(reference).exists():
        return Path(reference), None
    repo = hub_repo(reference)
    if repo is None:
        return Path(reference), None
    try:
        return snapshot(*repo, kind=kind), repo[0]
    except HubError as error:
        if explicit:  # the Hub was asked for by name: "here" was never in question
            raise
        raise HubError(f"{missing}, and {error}") from error
