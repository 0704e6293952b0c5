"""The training bundle's Croissant 1.1 description (croissant.json, https://mlcommons.org/croissant/):
what the files are, the label columns, the licence and how to cite, in JSON-LD that dataset tools
(Hugging Face, Kaggle, mlcroissant, TFDS) read. tests/test_builder_projects.py validates it with
mlcroissant.
"""

from core.exporters import Column

CROISSANT_1_1 = "http://mlcommons.org/croissant/1.1"

# The @context of Croissant 1.1, as mlcroissant writes it (mlcroissant._src.core.rdf.make_context).
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "equivalentProperty": "cr:equivalentProperty",
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
DATA_TYPES = {
    "int": "sc:Integer",
    "float": "sc:Float",
    "str": "sc:Text",
    "bool": "sc:Boolean",
    "datetime": "sc:Date",
}
ENCODINGS = {".csv": "text/csv", ".npy": "application/x-npy", ".json": "application/json"}


def _record_set(file_name: str, columns: list[Column], description: str) -> dict:
    table = file_name.rsplit(".", 1)[0]
    return {
        "@type": "cr:RecordSet",
        "@id": table,
        "name": table,
        "description": description,
        "field": [
            {
                "@type": "cr:Field",
                "@id": f"{table}/{column.name}",
                "name": column.name,
                "description": column.description or column.name,
                "dataType": DATA_TYPES.get(column.kind, "sc:Text"),
                "source": {"fileObject": {"@id": file_name}, "extract": {"column": column.name}},
            }
            for column in columns
        ],
    }


def croissant(
    manifest: dict, tables: dict[str, tuple[list[Column], str]], *, name: str, description: str
) -> dict:
    """The JSON-LD for a bundle whose manifest (core.exporters.base_meta and the bundle's own keys)
    lists its files with their SHA-256. `tables`: CSV file name → (its columns, what a row is)."""
    distribution = [
        {
            "@type": "cr:FileObject",
            "@id": file_name,
            "name": file_name,
            "contentUrl": file_name,
            "contentSize": f"{info['bytes']} B",
            "encodingFormat": ENCODINGS.get(file_name[file_name.rfind(".") :], "application/octet-stream"),
            "sha256": info["sha256"],
        }
        for file_name, info in manifest["files"].items()
    ]
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CROISSANT_1_1,
        "name": name,
        "description": description,
        "url": manifest["url"],
        "license": manifest["licence_url"] or manifest["licence"],
        "citeAs": manifest["citation"],
        "creator": {"@type": "sc:Person", "name": manifest["creator"]},
        "datePublished": manifest["exported_at"][:10],
        "version": "1.0.0",
        "keywords": ["astronomy", "transients", "real-bogus", "citizen science"],
        "distribution": distribution,
        "recordSet": [
            _record_set(file_name, columns, what)
            for file_name, (columns, what) in tables.items()
            if file_name in manifest["files"]
        ],
    }
