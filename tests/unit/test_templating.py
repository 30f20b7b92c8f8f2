"""Templates read a plain dict's key at once (`smartapp.web.templating`): the same values and
the same Undefined as Jinja's own lookup, and the same pages."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from flask import Flask, session
from flask.templating import Environment
from jinja2 import StrictUndefined, UndefinedError

from smartapp.fhir.chart import ChartRead
from smartapp.screen import views
from smartapp.screen.service import shown_from_read
from smartapp.web.templating import DictKeyFirstEnvironment
from tests.cdshooks.test_equal_by_construction import EXPECTED, NOW, PACK, SETTINGS, chart


class Keyed(dict):
    """A dict subclass: may have attributes of its own, so Jinja's order is kept."""

    note = "attribute"


def render(env_class: type, source: str, **values) -> str:
    app = Flask(__name__)
    app.jinja_environment = env_class
    return app.jinja_env.from_string(source).render(**values)


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ("{{ d.a }}|{{ d.a.b }}", {"d": {"a": {"b": 2}}}),
        ("{{ d.missing }}|{{ d.missing is defined }}", {"d": {}}),
        ("{{ d.items()|list }}", {"d": {"a": 1}}),  # a dict's own method
        ("{{ d['items'] }}|{{ d.items is callable }}", {"d": {"items": 3}}),  # key named so
        ("{{ d.note }}|{{ d['note'] }}", {"d": Keyed(note="key")}),  # a subclass's attribute
        ("{{ d.get('a') }}|{{ d.keys()|list }}", {"d": {"a": 1}}),
        ("{{ o.real }}|{{ s.upper() }}", {"o": 5, "s": "x"}),  # not a dict at all
        ("{% for k in d %}{{ k }}{{ d[k] }}{% endfor %}", {"d": {"x": 1, "y": None}}),
        ("{{ d.none }}|{{ d.none is none }}", {"d": {"none": None}}),
    ],
)
def test_a_lookup_gives_what_jinja_gives(source, values):
    assert render(DictKeyFirstEnvironment, source, **values) == render(
        Environment, source, **values
    )


def test_a_missing_key_is_the_undefined_jinja_makes():
    app = Flask(__name__)
    app.jinja_environment = DictKeyFirstEnvironment
    app.jinja_env.undefined = StrictUndefined
    with pytest.raises(UndefinedError, match="has no attribute 'missing'"):
        app.jinja_env.from_string("{{ d.missing }}").render(d={})


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> list[Flask]:
    """The app with Jinja's own environment, and with Handoff's."""
    from smartapp import create_app

    made = []
    for env_class in (Environment, DictKeyFirstEnvironment):
        app = create_app(
            {"TESTING": True, "DATABASE_URL": "sqlite://", "DEMO": True},
            instance_path=str(tmp_path_factory.mktemp(env_class.__name__)),
        )
        app.jinja_environment = env_class
        assert isinstance(app.jinja_env, env_class)
        made.append(app)
    return made


@pytest.mark.parametrize("name", sorted(EXPECTED["cases"]))
def test_the_screen_page_is_the_same_text(apps, name):
    """Every public chart's screen page, as Jinja's own environment renders it."""
    case = EXPECTED["cases"][name]
    read = ChartRead(resources=chart(name))
    shown = shown_from_read(read, [], PACK, SETTINGS, NOW, case["encounter"], case["patient"], [])
    shown |= {"signer_name": "Dr Test", "coach_expectation": {}}
    shown["aids"]["recorded"] = {}
    shown = json.loads(json.dumps(shown))  # as kept on the launch and read back
    context = SimpleNamespace(id="ctx", need_patient_banner=True, browser_id="b", shown=shown)
    pages = []
    for app in apps:
        with app.test_request_context("/c/ctx"):
            session["csrf"] = "the same token"  # (a new one per session otherwise)
            pages.append(views.unsigned_page(context, shown, [], views.blank_choices(shown)))
    assert pages[0] == pages[1]
    assert shown["patient"]["name"] in pages[1]
