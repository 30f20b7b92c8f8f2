"""The patient's discharge sheet (issue 13 item 7), over real HTTP after a real launch and
Sign: HTML (print stylesheet) and PDF in English and Spanish. The PDF is rendered to an
image (pypdfium2) and checked: one page, ink on it, the program's phone in its text. The
sheet names only what the patient accepted: no diagnosis, no evidence, no patient name, no
coach after a decline or a revoke."""

from __future__ import annotations

import io
import re

import pytest
import requests

from smartapp.aftercare import sheet as sheets
from smartapp.config import Defaults
from tests import launch_flow
from tests.aftercare.test_amend import amend_form, context_of, shown_of, sign
from tests.stacks import start_stack

PROGRAM = "bridge-clinic"  # catalog/sample: Example Bridge Clinic
PROGRAM_PHONE = "(555) 555-0111"
WARM_LINE_PHONE = "(555) 555-0142"  # catalog/sample: Example Peer Recovery Warmline


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("sheet"), shared_dir)
    yield stack
    stack.stop()


def sign_with_program(stack, launch) -> requests.Response:
    """Sign with every suggestion accepted and the catalog's bridge clinic chosen."""
    context_id = context_of(launch)
    token = re.search(r'name="csrf_token" value="([^"]+)"', launch.final.text).group(1)
    form = {"csrf_token": token, "consult-mode": "in-person", "program": PROGRAM}
    for suggestion in shown_of(stack, context_id)["suggestions"]:
        form[f"decision-{suggestion['kind']}"] = "accept"
    return launch.browser.post(f"{stack.app.url}/c/{context_id}/sign", data=form, timeout=30)


def pdf_pages(body: bytes, folder, name: str) -> tuple[int, str, float]:
    """(pages, the first page's text, the share of its pixels with ink) of a PDF, the first
    page saved as `name`.png in `folder` to be looked at."""
    import pypdfium2

    document = pypdfium2.PdfDocument(io.BytesIO(body))
    page = document[0]
    text = page.get_textpage().get_text_range()
    image = page.render(scale=1.5).to_pil().convert("L")
    image.save(folder / f"{name}.png")
    pixels = image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata()
    ink = sum(1 for value in pixels if value < 128) / (image.width * image.height)
    return len(document), text, ink


def forbidden_words(stack, context_id: str) -> list[str]:
    """What the sheet must never show: the evidence words of the screen (diagnosis names,
    dates), the reasons, and the patient's name from the chart."""
    shown = shown_of(stack, context_id)
    words = []
    for suggestion in shown["suggestions"]:
        words += [e["words"] for e in suggestion["evidence"]]
        words.append(suggestion["reason"])
    patient = stack.reader("P04-pt").get("Patient/P04-pt")
    words += [n["family"] for n in patient.get("name", []) if n.get("family")]
    return [w for w in words if w and len(w) > 3]


@pytest.fixture(scope="module")
def signed(stack):
    """P04's visit signed with the coach and the bridge clinic (the sheet is 404 before)."""
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P04-pt")
    base = f"{stack.app.url}/c/{context_of(launch)}"
    assert launch.browser.get(f"{base}/sheet", timeout=15).status_code == 404
    assert sign_with_program(stack, launch).status_code == 200
    return launch


@pytest.mark.parametrize("language", sheets.LANGUAGES)
def test_the_sheet_in_each_language_html_and_one_page_pdf(stack, signed, language, tmp_path):
    launch = signed
    context_id = context_of(launch)
    base = f"{stack.app.url}/c/{context_id}"
    text = sheets.texts(Defaults.AFTERCARE_SHEET_DIR, language)

    page = launch.browser.get(f"{base}/sheet", params={"lang": language}, timeout=15)
    assert page.status_code == 200
    assert f'<html lang="{language}">' in page.text
    for words in (text["title"], text["coach"]["heading"], text["program"]["heading"]):
        assert words in page.text
    assert PROGRAM_PHONE in page.text and WARM_LINE_PHONE in page.text
    assert "aftercare.css" in page.text  # the print stylesheet

    answer = launch.browser.get(f"{base}/sheet.pdf", params={"lang": language}, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/pdf"
    pages, pdf_text, ink = pdf_pages(answer.content, tmp_path, f"sheet-{language}")
    print(f"sheet image: {tmp_path / f'sheet-{language}.png'}")
    assert pages == 1
    assert 0.005 < ink < 0.5  # text on it, not a blank or a black page
    flat = " ".join(pdf_text.split())
    assert PROGRAM_PHONE in flat and WARM_LINE_PHONE in flat
    assert " ".join(text["naloxone"]["heading"].split()) in flat
    for words in forbidden_words(stack, context_id):
        assert words not in page.text and words not in flat, words


def test_no_coach_on_the_sheet_after_a_decline_or_a_revoke(stack, tmp_path):
    english = sheets.texts(Defaults.AFTERCARE_SHEET_DIR, "en")
    declined = launch_flow.full(stack.app.url, stack.ehr_url, "P01-pt")
    assert sign(stack, declined, decline_coach=True).status_code == 200
    page = declined.browser.get(f"{stack.app.url}/c/{context_of(declined)}/sheet", timeout=15)
    assert english["coach"]["heading"] not in page.text
    assert english["warm_line"]["heading"] in page.text and WARM_LINE_PHONE in page.text

    signed = launch_flow.full(stack.app.url, stack.ehr_url, "P03-pt")
    assert sign_with_program(stack, signed).status_code == 200
    base = f"{stack.app.url}/c/{context_of(signed)}"
    assert english["coach"]["heading"] in signed.browser.get(f"{base}/sheet", timeout=15).text
    fields = amend_form(signed.browser, f"{base}/amend")
    posted = signed.browser.post(f"{base}/amend", data=fields | {"reason": "changed-mind"})
    assert posted.status_code == 200
    after = signed.browser.get(f"{base}/sheet", timeout=15).text
    assert (
        english["coach"]["heading"] not in after
        and PROGRAM_PHONE not in after.split(english["buprenorphine"]["heading"])[0]
    )
    pdf = signed.browser.get(f"{base}/sheet.pdf", timeout=30).content
    pages, _, _ = pdf_pages(pdf, tmp_path, "sheet-revoked")
    assert pages == 1


def test_every_language_file_has_every_text_and_fits_latin1():
    """Each language's file has every key the sheet reads (its sources too), and every word
    prints in the PDF's font."""
    for language in sheets.LANGUAGES:
        text = sheets.texts(Defaults.AFTERCARE_SHEET_DIR, language)
        assert text["sources"]
        flat = repr(text)
        flat.encode("latin-1")


@pytest.mark.parametrize("language", sheets.LANGUAGES)
def test_the_html_sheet_prints_on_one_page_in_chromium(stack, signed, browser, language, tmp_path):
    """The HTML sheet in Chromium: a screenshot to look at, and printed (its print
    stylesheet) to PDF on US Letter: one page, without the tools bar."""
    import pypdfium2

    context = browser.new_context(viewport={"width": 800, "height": 1000})
    context.add_cookies(
        [{"name": c.name, "value": c.value, "url": stack.app.url} for c in signed.browser.cookies]
    )
    page = context.new_page()
    page.goto(f"{stack.app.url}/c/{context_of(signed)}/sheet?lang={language}")
    page.screenshot(path=str(tmp_path / f"html-{language}.png"), full_page=True)
    print(f"sheet page: {tmp_path / f'html-{language}.png'}")
    page.emulate_media(media="print")
    printed = page.pdf(format="Letter", print_background=False)
    context.close()
    document = pypdfium2.PdfDocument(io.BytesIO(printed))
    assert len(document) == 1
    text = " ".join(document[0].get_textpage().get_text_range().split())
    assert PROGRAM_PHONE in text and "Print" not in text  # the tools bar is not printed
    image = document[0].render(scale=1.5).to_pil()
    image.save(tmp_path / f"printed-{language}.png")
