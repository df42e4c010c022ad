-- Break-glass reasons are free text typed under pressure and may name a patient: they are
-- stored only sealed, under the data key of the dialog the grant opens (`reason_key_id`),
-- so erasing the dialog erases them too, and `reason` is left empty. A row written before
-- this migration keeps its plaintext `reason` until the server seals it at start
-- (`Access::seal_legacy_reasons`).
ALTER TABLE breakglass_grants ADD COLUMN reason_sealed BLOB;
ALTER TABLE breakglass_grants ADD COLUMN reason_key_id TEXT REFERENCES data_keys (id);
