"""The COWS form's items are rendered once per scale and kept (issue 15: they were about a
third of rendering the screen): the same text as the template gives, escaped, and rendered
again for another scale (a site's own rules folder), never one request's for another's."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from smartapp import create_app
from smartapp.aids import data
from smartapp.aids.views import cows_items
from smartapp.engine.location import builtin_rules_dir


def test_the_cows_items_are_rendered_once_per_scale_and_escaped(tmp_path: Path):
    app = create_app({"DEMO": True}, instance_path=str(tmp_path / "instance"))
    scale = data.cows_scale(builtin_rules_dir())
    with app.test_request_context("/"):
        first = cows_items(scale)
        template = app.jinja_env.get_template("aids/_cows_items.html")
        assert isinstance(first, Markup) and str(first) == template.render(scale=scale)
        assert cows_items(scale) is first  # kept, not rendered again
        for item in scale.items:
            assert first.count(f'name="cows-{item.id}"') == len(item.answers)
        assert first.count("<fieldset") == len(scale.items)

        hostile = scale.items[0].model_copy(update={"title": '<script>alert("x")</script>'})
        other = scale.model_copy(update={"items": (hostile, *scale.items[1:])})
        rendered = cows_items(other)
        assert rendered is not first and cows_items(other) is rendered
        assert "<script>" not in rendered and "&lt;script&gt;" in rendered
        assert cows_items(scale) is first
