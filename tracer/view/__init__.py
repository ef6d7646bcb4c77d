"""Views of plain data, torch-free: text for people (`text`: numbers as torch prints
them, a check in words), what a reader should not miss (`report`), module calls collapsed
to fit a slide (`collapse`), and the backward pass step by step (`steps`). Over `model`
and `derivatives`."""
