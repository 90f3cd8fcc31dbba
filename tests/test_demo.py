import re

from flows.demo import main


def test_demo_syncs_both_crms_then_requalifies_later(tmp_path, monkeypatch, capsys, prefect_api):
    # The demo points the connectors and the ledger at its own folder; restore afterwards.
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", "")
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", "")
    main(["--leads", "1500", "--later-days", "120", "--directory", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    for run in (
        "salesforce sync",
        "hubspot sync",
        "salesforce requalify +120d",
        "hubspot requalify +120d",
    ):
        line = next(line for line in out.splitlines() if line.startswith(run))
        assert "Completed" in line, line
    assert "sent to review" in out.splitlines()[2] and "quarantined" in out.splitlines()[2]
    review = out.split("Criteria review")[1]
    assert "salesforce: " in review and "hubspot: " in review and "90-100" in review
    proposals = out.split("Proposed rules, fitted on the older leads")[1].split("Status moves")[0]
    for source in ("salesforce", "hubspot"):
        assert re.search(
            rf"{source}: held-out AUC 0\.\d{{3}} against the current rules' 0\.\d{{3}}", proposals
        ), proposals
        assert (tmp_path / "demo" / f"proposed-rules-{source}.yaml").exists()
    edits = out.split("Speed to lead")[1].split("Status moves")[0]
    for source in ("salesforce", "hubspot"):
        assert re.search(rf"{source}: lead \S+ edited \(title: Student\), rescored and written", edits)
    moves = out.split("Status moves in the requalification pass")[1]
    assert "Qualified -> Nurture" in moves
