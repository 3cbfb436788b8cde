"""The technician's sheets as a spreadsheet writes them: a blank cell is a column left out."""

from __future__ import annotations

import pytest

from provisioning.errors import SheetErrors
from provisioning.sheets import CameraSpecRow, read_sheet

HEADER = "unit_code,index,camera_id,vendor,host,channel,port,path,grid_code,name\n"


def test_a_blank_cell_takes_the_columns_default() -> None:
    # An ONVIF camera has no channel: its stream is a path from GetStreamUri.
    text = HEADER + "511725106201,,cam01,onvif,192.168.1.70,,,live/main,511725106201001,\n"
    [line] = read_sheet(text, CameraSpecRow, "cameras.csv")
    assert (line.row.index, line.row.channel, line.row.port, line.row.name) == (1, 1, None, None)
    assert line.row.path == "live/main"


def test_a_blank_required_cell_is_reported_by_line_and_field() -> None:
    text = HEADER + "511725106201,1,cam01,onvif,  ,,,live/main,511725106201001,\n"
    with pytest.raises(SheetErrors) as refused:
        read_sheet(text, CameraSpecRow, "cameras.csv")
    assert "cameras.csv line 2: host: Field required" in str(refused.value)
