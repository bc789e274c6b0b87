"""Uploading a finished folder (a dataset export, a trained model) to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

#: Above this size a folder is uploaded with ``upload_large_folder`` (resumable, many commits, parallel workers).
LARGE_UPLOAD_BYTES = 5 << 30


def upload(folder: str | Path, repo_id: str, repo_type: str, private: bool = False,
           commit_message: str = "Upload with bioscan5m") -> None:
    """Upload ``folder`` to a Hub repo (created if needed, private when asked): one commit for a small folder,
    ``upload_large_folder`` for a large one, which resumes where an interrupted upload stopped.

    An existing repo is added to, never emptied: the upload is a new commit that deletes no file already there,
    and every earlier version stays in the repo's history."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    size = sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
    if size > LARGE_UPLOAD_BYTES:
        api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, private=private)
    else:
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, commit_message=commit_message)
