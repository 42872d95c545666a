"""3D queries on an exported feature field: relevancy, 3D masks, frame localisation, relevancy images."""

from find3d.query.field import Field, FrameHit, QueryResult

__all__ = ["Field", "FrameHit", "QueryResult"]
