from flows.demo import main


def test_demo_prints_status_table_and_requalification_moves(capsys):
    main(["--leads", "800", "--seed", "3", "--later-days", "120"])
    out = capsys.readouterr().out
    assert "Scored 800 generated leads" in out
    for status in ("Qualified", "Nurture", "Disqualified", "Needs review"):
        assert status in out
    assert "Requalified 120 days later" in out
    moved = int(out.split("no new engagement: ")[1].split(" statuses moved")[0].replace(",", ""))
    assert moved > 0
