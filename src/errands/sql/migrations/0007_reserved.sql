-- Reserved for the lead's 0007 (received_at ordering, per-owner fairness): a
-- placeholder so that versions stay contiguous on this branch; the merge replaces it.
SELECT 1;
