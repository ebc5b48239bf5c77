-- Run-and-wait (`executeWorkflow?waitSeconds=`) wakes on a run's end instead of polling the
-- database: each instance whose status becomes final notifies `jet_instance_ended` with its
-- id. A trigger, so every way a run ends (settle, cancel, a parent's cascade) is covered.
-- NOTIFY is only a hint: a waiter subscribes first, then reads the status itself.
CREATE FUNCTION "jetNotifyInstanceEnded"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jet_instance_ended', NEW."instanceID"::text);
    RETURN NULL;
END $$;

CREATE TRIGGER "trgTblWorkflowInstancesEnded" AFTER UPDATE OF "status" ON "tblWorkflowInstances"
    FOR EACH ROW
    WHEN (NEW."status" IN ('COMPLETED', 'FAILED', 'CANCELLED') AND OLD."status" IS DISTINCT FROM NEW."status")
    EXECUTE FUNCTION "jetNotifyInstanceEnded"();
