"""A Django-configured worker saves checkpoints straight into the dashboard's database.

Real processes: ``manage.py migrate``, then a worker ``manage.py shell -c`` that saves
through ``resilience.checkpoint.checkpoint_manager`` (the Django store, installed by
``django.setup()``), then another process that opens the admin as a superuser: the
checkpoint is listed and verifies. Nothing is shared but the database file, the media
folder and the settings (SECRET_KEY, hence the signing key).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.fleet.processes import ROOT

SAVE = """
from resilience.checkpoint import checkpoint_manager
print(checkpoint_manager.save_checkpoint({"step": 7}, "django-worker", "wf-1", {"by": "shell"}))
"""

ADMIN = """
import django, json, sys
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()  # records response.context, as under the test runner
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
checkpoint_id = sys.argv[1]
client = Client()
client.force_login(User.objects.create_superuser("root", "r@example.com", "pw-123456789"))
url = reverse("admin:checkpoints_checkpoint_changelist")
listing = client.get(url + "?agent_id=django-worker")
verified = client.post(
    url, {"action": "verify_integrity", "_selected_action": [checkpoint_id]}, follow=True
)
print(json.dumps({
    "listed": listing.status_code == 200 and checkpoint_id in listing.content.decode(),
    "messages": [str(m) for m in verified.context["messages"]],
}))
"""


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_checkpoint_saved_in_a_manage_py_process_is_listed_and_verifies(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "SECRET_KEY": "worker-checkpoints-" + uuid.uuid4().hex,
        "RESILIENCE_DEMO": "0",
        "ALERTS_ENABLED": "0",
        "TRACES_ENABLED": "0",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "testserver",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    run(env, "manage.py", "migrate", "--noinput")
    checkpoint_id = run(env, "manage.py", "shell", "-c", SAVE)
    assert checkpoint_id.startswith("ck_")
    assert (tmp_path / "media" / "checkpoints" / f"{checkpoint_id}.ckpt").is_file()
    seen = json.loads(run(env, "-c", ADMIN, checkpoint_id))
    assert seen == {"listed": True, "messages": [f"ok (1): {checkpoint_id}"]}


PLAIN_WORKER = """
import os, sys
from resilience.checkpoint import StateCheckpointManager
from resilience.fleet.checkpoints import forward
manager = StateCheckpointManager(
    os.environ["WORKER_CHECKPOINT_DIR"], signing_key=os.environ["WORKER_SIGNING_KEY"]
)
forwarder = forward(manager)  # RESILIENCE_DASHBOARD_URL / _TOKEN from the environment
checkpoint_id = manager.save_checkpoint({"step": 9}, "plain-worker", "wf-2", {"by": "script"})
forwarder.stop(10)
assert forwarder.pending == 0 and forwarder.sent == 1, (forwarder.failed, forwarder.pending)
assert "django" not in sys.modules
print(checkpoint_id)
"""


def test_a_plain_python_worker_reports_metadata_and_the_admin_verifies_its_blob(
    tmp_path: Path,
) -> None:
    from tests.fleet.processes import running_fleet

    media, key = tmp_path / "media", "shared-signing-key-" + uuid.uuid4().hex
    with running_fleet(MEDIA_ROOT=str(media), CHECKPOINT_SIGNING_KEY=key) as fleet:
        env = {
            **fleet.worker_env,
            "WORKER_CHECKPOINT_DIR": str(media / "checkpoints"),
            "WORKER_SIGNING_KEY": key,
        }
        checkpoint_id = run(env, "-c", PLAIN_WORKER)
        admin_env = {**fleet.server.env, "ALLOWED_HOSTS": "testserver"}
        seen = json.loads(
            run(admin_env, "-c", ADMIN.replace("django-worker", "plain-worker"), checkpoint_id)
        )
    assert seen == {"listed": True, "messages": [f"ok (1): {checkpoint_id}"]}
