"""The sheet's parts without a server: hours in the sheet's words, the PDF's one page, and a
sheet too long for one page refused rather than printed on two."""

from __future__ import annotations

import io

import pytest

from smartapp.aftercare import pdf
from smartapp.aftercare.sheet import LANGUAGES, Place, Sheet, hours_words, place, texts
from smartapp.catalog import load_catalog
from smartapp.catalog.hours import hours_text
from smartapp.config import Defaults

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(Defaults.CATALOG_DIR)


def test_hours_in_each_language_and_unchanged_by_default(catalog):
    clinic = catalog.get("bridge-clinic")
    assert hours_text(clinic.windows) == "Mon-Fri 08:00-17:00; Sat 09:00-12:00"
    english = hours_words(texts(Defaults.AFTERCARE_SHEET_DIR, "en"))
    assert hours_text(clinic.windows, english) == "Mon-Fri 8:00 AM-5:00 PM; Sat 9:00 AM-12:00 PM"
    spanish = hours_words(texts(Defaults.AFTERCARE_SHEET_DIR, "es"))
    assert hours_text(clinic.windows, spanish) == "lun-vie 08:00-17:00; sáb 09:00-12:00"
    warm = catalog.get("recovery-warmline")
    assert hours_text(warm.windows, spanish) == "Todos los días, 24 horas"


def sheet(language: str, catalog, **extra) -> Sheet:
    text = texts(Defaults.AFTERCARE_SHEET_DIR, language)
    clinic = place(catalog.get("bridge-clinic"), text)
    values = {
        "language": language,
        "text": text,
        "coach": text["coach"]["in-person"],
        "program": clinic,
        "warm_line": place(catalog.get("recovery-warmline"), text),
        "next_steps": text["next"]["with_coach"] + text["next"]["always"],
        "buprenorphine": [clinic],
    }
    return Sheet(**(values | extra))


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_pdf_is_one_page_with_the_phones(language, catalog):
    import pypdfium2

    document = pypdfium2.PdfDocument(io.BytesIO(pdf.render(sheet(language, catalog))))
    assert len(document) == 1
    text = " ".join(document[0].get_textpage().get_text_range().split())
    assert "(555) 555-0111" in text and "(555) 555-0142" in text


def test_a_sheet_too_long_for_one_page_is_refused(catalog):
    many = [Place(f"Program {n}", "(555) 555-0100", "Every day, 24 hours") for n in range(60)]
    with pytest.raises(pdf.SheetTooLong):
        pdf.render(sheet("en", catalog, buprenorphine=many))


def test_a_character_outside_the_font_is_not_printed_blank(catalog):
    with pytest.raises(Exception, match="(?i)font|character|encod"):
        pdf.render(sheet("en", catalog, coach="A coach \u2192 you"))
