"""The interactive shell against a real server process: scripted sessions, and the whole system
(`python main.py`, option 1) driven through a pseudo-terminal."""
from __future__ import annotations

import io
import os
import re
import sys

import pexpect
import pytest

from main import MAIN_PATH
from shell.api_client import ApiClient
from shell.interactive import run_shell
from live_server import free_port, server_env

pytestmark = pytest.mark.slow


def session(url: str, *answers: str) -> tuple[int, str]:
    """Run the shell on scripted answers (one per prompt); return its exit code and everything it printed."""
    out = io.StringIO()
    code = run_shell(url, stdin=io.StringIO("".join(f"{answer}\n" for answer in answers)), stdout=out)
    return code, out.getvalue()


def test_scripted_session(server):
    code, out = session(
        server.url,
        "1",                 # log in as alice
        "1", "",             # get recommendations, default count
        "2", "#1", "5",      # rate the first recommended item 5
        "7",                 # performance stats
        "x", "42",           # bad menu input: re-prompted
        "9",                 # quit
    )
    assert code == 0
    assert "Logged in as alice." in out
    assert "Recommendations for alice" in out
    assert re.search(r"#\s+Item\s+Category\s+Score\s+Strategy", out)
    assert re.search(r"source: (cache|computed) \| server \d+\.\d\d ms", out)
    rated = re.search(r"Recorded\. alice rated (.+) 5/5 \(recommendations refreshed", out)
    assert rated, out
    assert re.search(r"Kind\s+Hits\s+Misses\s+Hit rate", out)
    assert re.search(r"GET /recommendations/\S*\s+\d+", out)
    assert out.count("Please enter a number from 1 to 9.") == 2
    assert out.rstrip().endswith("Goodbye.")

    newest = ApiClient(server.url).user("alice")["history"][0]
    assert (newest["event_type"], newest["rating"]) == ("rating", 5)


def test_errors_are_one_line_and_the_session_goes_on(server):
    code, out = session(
        server.url,
        "1",
        "2", "no_such_item", "9", "4",     # unknown item (the rating 9 is refused first)
        "3", "3", "iphone",                # purchase
        "9",
    )
    assert code == 0
    assert "Please enter a number from 1 to 5." in out
    assert re.search(r"Error: 404 not_found: [^\n]+\n", out)  # after the unechoed prompt
    assert "Recorded. Purchase: alice -> " in out
    assert "Traceback" not in out


def test_new_user_and_switching(server):
    code, out = session(
        server.url,
        "4", "not a valid id!",            # refused by the server: asked again
        "4", "shell_test_user",            # created through POST /users
        "6", "1", "3",                     # popular items, all categories, top 3
        "8", "2",                          # switch to bob
        "4", "1", "q",                     # browse the first category; no next page
        "9",
    )
    assert code == 0
    assert "Cannot log in as 'not a valid id!'" in out
    assert "Created user shell_test_user." in out
    assert "Popular items (all categories)" in out
    assert "Logged in as bob." in out and "[bob] What next?" in out
    assert re.search(r"#\s+Id\s+Name\s+Category\s+Brand\s+Price", out)



LOCAL_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


def test_recommendations_say_why_and_times_are_local_date_times(server):
    code, out = session(server.url, "1", "1", "3", "7", "9")  # alice's top 3, then the stats
    assert code == 0
    header = re.search(r"#\s+Item\s+Category\s+Score\s+Strategy\s+Why\n", out)
    assert header, out
    rows = out[header.end():].splitlines()[1:4]  # after the dashes
    reasons = [entry["reason"] for entry in ApiClient(server.url).recommendations("alice", 3)["recommendations"]]
    assert len(rows) == 3 and all(row.rstrip().endswith(reason) for row, reason in zip(rows, reasons)), (rows, reasons)
    assert re.search(rf"Engine: .*fitted_at={LOCAL_TIME}", out), out
    assert not re.search(r"=1\d{9}(\.\d+)?\b", out), "epoch seconds in the output"


def test_many_categories_are_offered_a_page_at_a_time(server):
    client = ApiClient(server.url)
    for n in range(80):
        client.put_item({"item_id": f"paging_{n:03d}", "name": f"Paging item {n}", "category": f"paging_{n:03d}"})
    ranked = sorted(client.categories()["categories"], key=lambda entry: (-entry["count"], entry["name"]))
    total, pages = len(ranked), -(-len(ranked) // 15)
    back = 1 + (total - 15 * (pages - 1)) + 1  # "Back to the largest" on the last page, after "all categories"
    code, out = session(server.url, "1", "4", "16", "1", "9")  # browse: next page, its first category
    assert code == 0
    listings = re.findall(r"Categories: \((\d+)-(\d+) of (\d+), the largest first\)\n((?:  \d+\. .*\n)+)", out)
    assert [(first, last, of) for first, last, of, _ in listings] == [("1", "15", str(total)), ("16", "30", str(total))]
    first_page = listings[0][3].splitlines()
    assert len(first_page) == 16 and first_page[-1] == "  16. More categories (16-30)"
    assert first_page[0] == f"  1. {ranked[0]['name']} ({ranked[0]['count']} items)"  # the largest first
    chosen = ranked[15]["name"]
    assert f"{chosen} (1 items)" in out and "Paging item" in out

    code, out = session(server.url, "1", "6", *["17"] * (pages - 1), str(back), "1", "3", "9")  # popular: wrap around
    assert code == 0
    assert f"  {back}. Back to the largest categories (1-15)" in out
    assert "Popular items (all categories)" in out  # after wrapping, option 1 is still "all categories"


def test_a_large_category_is_shown_a_page_at_a_time(server):
    category = max(ApiClient(server.url).categories()["categories"], key=lambda entry: entry["count"])
    assert category["count"] > 40
    code, out = session(server.url, "1", "4", "1", "", "q", "9")  # first page, next page, stop
    assert code == 0
    assert f"{category['name']} (1-20 of {category['count']} items)" in out
    assert f"{category['name']} (21-40 of {category['count']} items)" in out
    assert re.search(r"^\s*40\s+\S+", out, re.M) and not re.search(r"^\s*41\s+\S+", out, re.M)

def test_end_of_input_leaves_cleanly(server):
    code, out = session(server.url, "1")  # log in, then the script ends at the menu
    assert code == 0
    assert out.rstrip().endswith("Goodbye.")


def test_unreachable_server_is_one_clear_message():
    code, out = session(f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "Cannot reach the server" in out and "python main.py serve" in out


def test_complete_system_in_a_terminal(tmp_path):
    """`python main.py`, option 1: server child + shell; quitting the shell stops the server."""
    env = server_env(tmp_path) | {"PORT": str(free_port())}
    child = pexpect.spawn(sys.executable, [str(MAIN_PATH)], env=env, cwd=str(MAIN_PATH.parent),
                          encoding="utf-8", timeout=30)
    try:
        child.expect(r"Choose an option \[1-4\]: ")
        child.sendline("1")
        child.expect(r"Server started \(pid (\d+)\)", timeout=90)
        server_pid = int(child.match.group(1))
        child.expect(r"Log in as:.*Choose \[1-4\]: ")
        child.sendline("1")
        child.expect(r"Logged in as alice\..*Choose \[1-9\]: ")
        child.sendline("1")
        child.expect(r"How many\? \[10\]: ")
        child.sendline("")
        child.expect(r"Recommendations for alice.*source: (cache|computed)")
        child.expect(r"Choose \[1-9\]: ")
        child.sendline("9")
        child.expect("Goodbye.")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
