"""Staff in Chromium: sign in at the identity provider (the sandbox's user chooser)."""

from __future__ import annotations


def sign_in(page, url: str, user_id: str) -> None:
    """Open `url` (a staff or partner page) and sign in as the sandbox's demo `user_id`."""
    page.goto(url)
    page.locator(f'button[name="user"][value="{user_id}"]').click()
