-- A command that apalis gives up on (Killed, or Failed with no attempts left) is parked in
-- tblEventDLQ by a trigger, in the same transaction as apalis's own status write: nothing is
-- dropped silently, even if the worker that ran it dies right after.

CREATE FUNCTION "jetParkFailedCommand"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb;
BEGIN
    BEGIN
        body := convert_from(NEW.job, 'UTF8')::jsonb;
    EXCEPTION WHEN others THEN
        -- Undecodable bytes are kept too, as hex, so the operator can see what arrived.
        body := jsonb_build_object('raw', encode(NEW.job, 'hex'));
    END;
    INSERT INTO "tblEventDLQ" ("tenantID", "source", "sourceID", "payload", "error", "retryCount", "maxRetries", "status")
    VALUES (
        NULL,
        'command',
        NULL,
        jsonb_build_object('queue', NEW.job_type, 'jobID', NEW.id, 'command', body),
        COALESCE(NEW.last_result ->> 'Err', NEW.last_result::text, 'failed without a result'),
        NEW.attempts,
        NEW.max_attempts,
        'PARKED'
    );
    RETURN NEW;
END $$;

CREATE TRIGGER "trgApalisJobsParkFailedCommand" AFTER UPDATE OF status ON apalis.jobs
    FOR EACH ROW
    WHEN (NEW.job_type = 'jet-commands' AND OLD.status IS DISTINCT FROM NEW.status
          AND (NEW.status = 'Killed' OR (NEW.status = 'Failed' AND NEW.attempts >= NEW.max_attempts)))
    EXECUTE FUNCTION "jetParkFailedCommand"();
