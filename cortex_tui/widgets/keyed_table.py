"""A DataTable that is kept in step with data by row key instead of being rebuilt.

``clear()`` and re-adding rows would reset the cursor and the scroll position on every refresh;
here rows are added and removed only for keys that appear or disappear, and only cells whose
value changed are rendered again and updated in place. The cursor stays on the same row key
when rows move.

A row is given as a tuple of plain values, one per column (cheap to build and compare for
thousands of rows); ``render_cell`` turns a value into what the cell shows.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

from rich.console import RenderableType
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist, RowKey

Values = tuple[Hashable, ...]


class LazyCell:
    """A cell rendered when the table first paints it. A refresh of 1,000 rows changes
    thousands of cells, but only the few dozen rows on screen are ever drawn."""

    __slots__ = ("_render", "_column", "_value", "_text")

    def __init__(self, render: Callable[[int, Hashable], RenderableType], column: int, value: Hashable) -> None:
        self._render, self._column, self._value = render, column, value
        self._text: RenderableType | None = None

    def __rich__(self) -> RenderableType:
        if self._text is None:
            self._text = self._render(self._column, self._value)
        return self._text

    def __str__(self) -> str:
        return str(self.__rich__())


class KeyedTable(DataTable):
    """Subclasses add their columns with ``add_column(..., key=...)``, including one with key
    "id" whose rendered cell shows the row key itself (str or Text): ordering sorts on it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._values: dict[str, Values] = {}

    def render_cell(self, column: int, value: Hashable) -> RenderableType:
        return Text(str(value))  # Text: DataTable reads a plain str as markup, and data is not markup

    @property
    def cursor_key(self) -> str | None:
        """Row key under the cursor, None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except CellDoesNotExist:
            return None

    def sync_rows(self, rows: Mapping[str, Values], order: Sequence[str], *, reorder: bool = False) -> None:
        """Make the table show exactly ``rows`` (key -> values, in column order), ordered as
        ``order``, touching only what changed. ``reorder`` re-sorts (and so repaints every
        cell, headers included) even when the order is unchanged."""
        selected = self.cursor_key
        columns = list(self.columns)
        changed = False
        render = self.render_cell
        for key in self._values.keys() - rows.keys():
            self.remove_row(key)
            del self._values[key]
        for key, values in rows.items():
            old = self._values.get(key)
            if old is None:
                self.add_row(*(render(i, v) for i, v in enumerate(values)), key=key)
            elif old != values:
                cells = self._data[RowKey(key)]
                for i, (before, after) in enumerate(zip(old, values)):
                    if before != after:
                        # what update_cell does, minus its refresh per cell: with thousands of
                        # changed cells the refreshes were most of a refresh's cost
                        cells[columns[i]] = LazyCell(render, i, after)
                        changed = True
            self._values[key] = values
        if changed:
            self._update_count += 1
            self.refresh()
        if reorder or [row.key.value for row in self.ordered_rows] != list(order):
            position = {key: i for i, key in enumerate(order)}
            self.sort("id", key=lambda cell: position[str(cell)])
        self._keep_cursor_on(selected)

    def _keep_cursor_on(self, key: str | None) -> None:
        if key is None or key not in self._values:
            return
        try:
            row = self.get_row_index(key)
        except RowDoesNotExist:
            return
        if row != self.cursor_row:
            self.move_cursor(row=row, animate=False)
