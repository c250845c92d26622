-- Leave a tenth of each page free, so an update that changes no indexed column (status,
-- metadata, branding, contacts: most of them) can write the new row version in the same page
-- (a HOT update) instead of adding entries to every index, the trigram index included.
ALTER TABLE organizations SET (fillfactor = 90);
