"""The digits reference task (`fl_core.examples.digits`) as a Flower app."""
