"""FHIR R4 (4.0.1) resource type names and the Patient compartment membership."""

from __future__ import annotations


def words(text: str) -> frozenset[str]:
    """The whitespace-separated names in `text` (keeps long name lists readable)."""
    return frozenset(text.split())


R4_RESOURCE_TYPES: frozenset[str] = words(
    """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
    CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse
    ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest
    DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis
    Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence
    EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal
    GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice
    Library Linkage List Location Measure MeasureReport Media Medication MedicationAdministration
    MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement
    MedicinalProduct MedicinalProductAuthorization MedicinalProductContraindication
    MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence
    NamingSystem NutritionOrder Observation ObservationDefinition OperationDefinition
    OperationOutcome Organization OrganizationAffiliation Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole Procedure
    Provenance Questionnaire QuestionnaireResponse RelatedPerson RequestGroup ResearchDefinition
    ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription Substance SubstanceNucleicAcid SubstancePolymer SubstanceProtein
    SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification SupplyDelivery
    SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet VerificationResult
    VisionPrescription
    """
)

#: Types that belong to a patient (the R4 Patient CompartmentDefinition, plus Task, whose `for`
#: is the patient). `patient/` scopes reach these only inside the launch patient's compartment;
#: other types (Practitioner, Organization, Medication, ...) are shared directory data.
PATIENT_COMPARTMENT_TYPES: frozenset[str] = words(
    """
    Account AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic
    BodyStructure CarePlan CareTeam ChargeItem Claim ClaimResponse ClinicalImpression
    Communication CommunicationRequest Composition Condition Consent Coverage
    CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue DeviceRequest
    DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference Encounter
    EnrollmentRequest EpisodeOfCare ExplanationOfBenefit FamilyMemberHistory Flag Goal Group
    ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation Invoice List
    MeasureReport Media MedicationAdministration MedicationDispense MedicationRequest
    MedicationStatement MolecularSequence NutritionOrder Observation Patient Person Procedure
    Provenance QuestionnaireResponse RelatedPerson RequestGroup ResearchSubject RiskAssessment
    Schedule ServiceRequest Specimen SupplyDelivery SupplyRequest Task VisionPrescription
    """
)

#: Types that are not stored as REST resources of their own.
NON_STORABLE_TYPES: frozenset[str] = frozenset(
    {"Bundle", "OperationOutcome", "Parameters", "CapabilityStatement"}
)
