"""`benchmarks/check_claims.py`: every claim in the tree checks out; a changed number, a lost file and a missing
archive are each told apart; the README and the claims page show what the claims file holds."""

import copy
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import check_claims as cc  # noqa: E402

CLAIMS = cc.load_claims()
BY_ID = {claim["id"]: claim for claim in CLAIMS["claims"]}


def test_every_claim_with_files_in_the_tree_checks_out():
    for claim in CLAIMS["claims"]:
        status, details = cc.check(claim, CLAIMS["archive"])
        assert status != "FAIL", (claim["id"], details)
    for headline in ("demo_500", "demo_default"):  # their run files are in the tree: they must be OK, not MISSING
        assert cc.check(BY_ID[headline], CLAIMS["archive"]) == ("OK", [])


def test_a_changed_number_fails_and_names_it():
    claim = copy.deepcopy(BY_ID["demo_500"])
    claim["pairs"]["nq_test"]["r3 @ bag_of_tokens - initial @ bag_of_tokens"] = [0.05, 0.018, 0.064]
    claim["metrics"]["squad_test"]["bm25s"]["rag_accuracy@1"] = 0.256
    status, details = cc.check(claim, CLAIMS["archive"])
    assert status == "FAIL" and len(details) == 2
    assert "r3 @ bag_of_tokens - initial @ bag_of_tokens: [0.04, 0.018, 0.064], expected [0.05" in details[1]
    assert details[0].startswith("squad_test bm25s rag_accuracy@1: 0.2540")


def test_an_archived_claim_is_missing_without_its_commit_and_fails_on_a_changed_value():
    claim = copy.deepcopy(BY_ID["index"])
    assert cc.check(claim, "0" * 40)[0] == "MISSING"
    if cc.check(claim, CLAIMS["archive"])[0] == "MISSING":
        pytest.skip("this clone lacks the archive commit (a shallow clone)")
    claim["values"][0]["value"] = 1.38
    status, details = cc.check(claim, CLAIMS["archive"])
    assert status == "FAIL" and details == ["build seconds: 1.4786281650012825, expected 1.38"]


def test_a_run_folder_without_its_files_is_missing(tmp_path):
    shutil.copytree(ROOT / BY_ID["demo_default"]["run"], tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "predictions" / "bm25s")
    status, details = cc.check(BY_ID["demo_default"], CLAIMS["archive"], tmp_path / "run")
    assert status == "MISSING" and details == [
        f"{tmp_path / 'run'}/predictions/bm25s/nq_test",
        f"{tmp_path / 'run'}/predictions/bm25s/squad_test",
    ]


def test_the_last_digit_written_is_the_tolerance():
    assert cc.tolerance(0.018) == pytest.approx(5e-4) and cc.tolerance(1003) == 0.5
    assert cc.tolerance(2.9e-7) == pytest.approx(5e-9) and cc.tolerance(1.0) == 0.5
    assert cc.matches(0.0184, 0.018) and not cc.matches(0.0186, 0.018)
    assert cc.points(-0.0004) == "+0.0"  # rounds to zero: no signed zero
    assert cc.points(0.022) == "+2.2" and cc.points(-0.094) == "−9.4" and cc.points(-1e-12) == "+0.0"


def test_the_readme_and_the_claims_page_show_what_the_claims_file_holds():
    assert cc.headline_table(BY_ID["demo_500"]) in (ROOT / "README.md").read_text()
    assert cc.CLAIMS_PAGE.read_text() == cc.markdown(CLAIMS), "run: python benchmarks/check_claims.py --markdown"


def test_the_checker_exits_0_and_prints_a_line_per_claim(capsys):
    assert cc.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1].rstrip(":") for line in out if not line.startswith(" ")] == list(BY_ID)
    with pytest.raises(SystemExit):
        cc.main(["--run", "nowhere"])
