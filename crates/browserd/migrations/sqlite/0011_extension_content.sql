-- An extension's content: the SHA-256 of its zip (hex). Identical uploads share one unpacked
-- folder, extensions/<content>/, and warm browsers can hold it; NULL for rows from before.
ALTER TABLE extensions ADD COLUMN content TEXT;
CREATE INDEX extensions_by_content ON extensions (content);
