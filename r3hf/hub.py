"""Upload to the Hub: one resumable upload of a folder that a save function writes, shared by retrievers and indexes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from huggingface_hub import HfApi


def push_folder(
    save: Callable[[str, str], None],
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str,
    commit_description: str | None = None,
    delete_patterns: list[str] | None = None,
) -> str:
    """Create the repo if needed, let `save(folder, repo_id)` write everything into a temporary folder, and upload it
    with `HfApi.upload_folder` (several resumable commits for a large folder); remote files matching
    `delete_patterns` that the folder does not hold are deleted. Returns the commit URL."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp, repo_id)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type=repo_type,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            commit_description=commit_description,
            delete_patterns=delete_patterns,
        )
    return info.commit_url
