"""The content library: where an account's uploaded images and videos live. ``storage``
holds the bytes (a folder under ``DATA_DIR`` or an S3 bucket, behind one ``BlobStore``
interface); the models and the library module keep the blobs (identical bytes stored once
per account), the items a user sees and each item's versions."""
