"""Field families behind one protocol (:class:`Field`), and field files (:func:`save`, :func:`load`)."""
from nfkit.fields.base import Capabilities, Field, FieldOutput, build_field, families, register_field
from nfkit.fields.hashgrid import HashGridField
from nfkit.fields.mlp import MLPField
from nfkit.fields.cam import CAMField
from nfkit.fields.rbf import RBFField
from nfkit.fields.triplane import TriplaneField
from nfkit.fields.hashcoord import HashCoordField
from nfkit.fields.sdf import NeuSField, SurfaceDensity
from nfkit.fields.io import load, read_header, save

__all__ = ["Capabilities", "Field", "FieldOutput", "HashGridField", "MLPField", "CAMField", "RBFField", "TriplaneField",
           "HashCoordField", "NeuSField", "SurfaceDensity", "build_field", "families", "register_field", "load", "save",
           "read_header"]
