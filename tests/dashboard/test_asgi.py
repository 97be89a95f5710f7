from __future__ import annotations

import pytest
from channels.testing import HttpCommunicator

pytestmark = pytest.mark.django_db(transaction=True)


async def test_asgi_application_serves_the_login_page_and_static_files() -> None:
    from dashboard.asgi import application

    page = await HttpCommunicator(application, "GET", "/accounts/login/").get_response()
    assert page["status"] == 200
    assert b"Log in" in page["body"]
    css = await HttpCommunicator(
        application, "GET", "/static/dashboard/dashboard.css"
    ).get_response()
    assert css["status"] == 200
    assert b"--closed" in css["body"]


async def test_asgi_application_requires_login_for_the_overview() -> None:
    from dashboard.asgi import application

    response = await HttpCommunicator(application, "GET", "/").get_response()
    assert response["status"] == 302
