-- A cancel that reaches a job already finished leaves it as it ended: a completed job
-- is not reported as cancelled (before, it ended `completed` with `cancelled = true`).
-- A cancel requested while the job ran is kept: the job may still end completed.
CREATE OR REPLACE FUNCTION errands_cancel_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.cancelled AND NOT OLD.cancelled
       AND OLD.state IN ('completed', 'failed', 'cancelled') AND NEW.state = OLD.state THEN
        NEW.cancelled := false;
    END IF;
    IF NEW.cancelled AND NEW.state = 'queued' THEN
        NEW.state := 'cancelled';
        NEW.finished_at := now();
    END IF;
    NEW.completed := NEW.state = 'completed';
    RETURN NEW;
END
$$;
