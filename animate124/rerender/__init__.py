"""Generative re-rendering of a trained 4D scene along any camera path (I2V3D's second stage; docs/rerender.md)."""
