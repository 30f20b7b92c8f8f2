"""The discharge sheet as a one-page PDF (fpdf2, pure Python): the same content as the HTML
sheet (`aftercare.sheet.build`), laid out for US Letter. The text is shrunk a step at a time
until it fits one page; a sheet that does not fit even at the smallest size raises (a text
file grew too long: shorten it). Helvetica covers Latin-1 (English and Spanish); a character
outside it raises rather than printing a blank."""

from __future__ import annotations

from fpdf import FPDF

from smartapp.aftercare.sheet import Place, Sheet

#: Body font sizes tried in turn (points) until the sheet fits one page.
SIZES = (12.0, 11.0, 10.0, 9.0, 8.5)
MARGIN = 16.0  # mm
INK = (20, 20, 20)
RULE = (120, 120, 120)


class SheetTooLong(ValueError):
    """The sheet does not fit one page even at the smallest font size."""


def render(sheet: Sheet) -> bytes:
    """The sheet as PDF bytes, one page."""
    for size in SIZES:
        pdf = _layout(sheet, size)
        if pdf.pages_count == 1:
            return bytes(pdf.output())
    raise SheetTooLong("The discharge sheet does not fit one page; shorten its text files.")


def _layout(sheet: Sheet, size: float) -> FPDF:
    text = sheet.text
    pdf = FPDF(format="Letter", unit="mm")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=MARGIN)
    pdf.set_title(text["title"])
    pdf.set_lang(sheet.language)
    pdf.set_creator("Handoff")
    pdf.add_page()
    pdf.set_text_color(*INK)
    line = size * 0.47  # mm per line of text at this size
    pdf.set_font("Helvetica", "B", size + 6)
    pdf.multi_cell(0, line * 1.4, text["title"], align="L", new_x="LMARGIN", new_y="NEXT")
    _para(pdf, text["intro"], size, line)
    if sheet.coach:
        _heading(pdf, text["coach"]["heading"], size, line)
        _para(pdf, sheet.coach, size, line)
        if not sheet.program:
            _para(pdf, text["coach"]["reach"], size, line)
    if sheet.program:
        _heading(pdf, text["program"]["heading"], size, line)
        _place(pdf, sheet.program, text, size, line)
        _para(pdf, text["program"]["text"], size, line)
    _heading(pdf, text["warm_line"]["heading"], size, line)
    if sheet.warm_line:
        _place(pdf, sheet.warm_line, text, size, line)
        _para(pdf, text["warm_line"]["text"], size, line)
    else:
        _para(pdf, text["warm_line"]["missing"], size, line)
    _heading(pdf, text["next"]["heading"], size, line)
    _items(pdf, sheet.next_steps, size, line, numbered=False)
    _heading(pdf, text["naloxone"]["heading"], size, line)
    _items(pdf, text["naloxone"]["steps"], size, line, numbered=True)
    _para(pdf, text["naloxone"]["note"], size, line)
    _heading(pdf, text["buprenorphine"]["heading"], size, line)
    _para(pdf, text["buprenorphine"]["text"], size, line)
    for program in sheet.buprenorphine:
        _place(pdf, program, text, size, line)
    _para(pdf, text["buprenorphine"]["also"], size, line)
    pdf.ln(line * 0.5)
    pdf.set_draw_color(*RULE)
    pdf.line(MARGIN, pdf.get_y(), pdf.w - MARGIN, pdf.get_y())
    pdf.ln(line * 0.3)
    pdf.set_font("Helvetica", "I", size - 1)
    pdf.multi_cell(0, line, text["footer"], align="L", new_x="LMARGIN", new_y="NEXT")
    return pdf


def _heading(pdf: FPDF, words: str, size: float, line: float) -> None:
    pdf.ln(line * 0.6)
    pdf.set_font("Helvetica", "B", size + 2)
    pdf.multi_cell(0, line * 1.15, words, align="L", new_x="LMARGIN", new_y="NEXT")


def _para(pdf: FPDF, words: str, size: float, line: float) -> None:
    pdf.set_font("Helvetica", "", size)
    pdf.multi_cell(0, line, words, align="L", new_x="LMARGIN", new_y="NEXT")


def _items(pdf: FPDF, items: list[str], size: float, line: float, numbered: bool) -> None:
    pdf.set_font("Helvetica", "", size)
    for number, item in enumerate(items, 1):
        mark = f"{number}." if numbered else "-"
        pdf.cell(7, line, mark)
        pdf.multi_cell(0, line, item, align="L", new_x="LMARGIN", new_y="NEXT")


def _place(pdf: FPDF, where: Place, text: dict, size: float, line: float) -> None:
    """A program: its name in bold, then phone, hours and address on one line each."""
    labels = text["labels"]
    pdf.set_font("Helvetica", "B", size)
    pdf.multi_cell(0, line, where.name, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", size)
    rows = [
        (labels["phone"], where.phone),
        (labels["hours"], where.hours),
        (labels["address"], where.address),
    ]
    for label, value in rows:
        if value:
            pdf.set_x(MARGIN + 5)
            pdf.multi_cell(0, line, f"{label}: {value}", align="L", new_x="LMARGIN", new_y="NEXT")
    if where.same_day:
        pdf.set_x(MARGIN + 5)
        pdf.multi_cell(0, line, labels["same_day"], align="L", new_x="LMARGIN", new_y="NEXT")
