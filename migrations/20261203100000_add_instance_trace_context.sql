-- An instance remembers the trace that started it (a W3C traceparent: the creating request's
-- span, or the parent's subWorkflow node span for a child), so that every node execution,
-- retry, human answer and child instance of one run joins that trace. NULL when the creating
-- process exported no spans. Bounded: a traceparent is 55 characters.
ALTER TABLE "tblWorkflowInstances"
    ADD COLUMN "traceContext" text
    CONSTRAINT "tblWorkflowInstances_traceContext_length" CHECK (length("traceContext") <= 256);
