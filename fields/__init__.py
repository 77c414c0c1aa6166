"""Field families behind one protocol (:class:`Field`), and field files (:func:`save`, :func:`load`)."""
from nfkit.fields.base import Field, FieldOutput, build_field, families, register_field
from nfkit.fields.hashgrid import HashGridField
from nfkit.fields.io import load, read_header, save

__all__ = ["Field", "FieldOutput", "HashGridField", "build_field", "families", "register_field", "load", "save",
           "read_header"]
