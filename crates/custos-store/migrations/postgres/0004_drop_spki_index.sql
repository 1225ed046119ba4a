-- The SPKI hash index was the second random-key index every issuance
-- touched (the serial is the other): its pages dirtied at random made a large
-- part of each commit's WAL. Only incident declarations by key look up by
-- SPKI, and a scan of the column costs them well under a second per million
-- certificates, so issuance no longer pays for it.
DROP INDEX IF EXISTS certificates_by_spki;
